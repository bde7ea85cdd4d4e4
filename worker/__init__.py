"""What runs the model: `model/` (no queues), the queue side of a worker process (tasks,
process, recovery, supervisor), rq_compat (rq's private surface, in one place) and the CLI.

Kept import-light: the CLI must start from a producer-only install."""
