"""How the supervisor (and the dev harness) start worker processes: the command, the environment that
gives every child exactly the supervisor's settings, and the exit code a child ends with on a
configuration error."""

from __future__ import annotations

import os
import sys

from embedq.config import Settings

# `embedq` exits with this on a configuration error (InvalidSettings, e.g. a worker refused a queue that
# another model serves); the supervisor does not restart a worker that exits with it.
CONFIG_ERROR_EXIT = 2


def embedq_command(*args: str) -> list[str]:
    """How embedq starts its own children: `-P` keeps the caller's working directory off their import
    path, so a web app's own worker.py, producer.py or config.py there cannot shadow embedq's modules."""
    return [sys.executable, "-P", "-m", "embedq.cli", *args]


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as EMBEDQ_* variables, so every child runs with exactly the supervisor's settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"EMBEDQ_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    return env
