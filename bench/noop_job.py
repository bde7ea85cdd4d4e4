"""The job plain rq runs in bench/fleet.py's baseline: nothing, so what is measured is rq's own cost."""


def noop() -> None:
    return None
