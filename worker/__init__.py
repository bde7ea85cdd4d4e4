"""What runs the model: encoder, embed task, worker process, supervisor and the `embedq` CLI.

Kept import-light: the CLI must start from a producer-only install."""
