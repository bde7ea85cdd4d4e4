"""The supervisor: keeps N workers alive (supervisor.py), kills hung ones (watchdog.py), one per host
and queue (host_lock.py), started the same way every time (spawn.py)."""
