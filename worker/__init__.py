"""The worker process: its task, the pass loop around the Encoder (process), hand-back of a dead
worker's jobs (recovery), the model's claim on a queue, back-off while Redis refuses; `model/`
(knows no queue) and `supervisor/` (keeps the workers alive).

Kept import-light: the CLI must start from a producer-only install."""
