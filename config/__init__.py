"""embedq's service settings (env prefix EMBEDQ_, also read from .env)."""

from embedq.config.settings import DEFAULT_MODEL_DIR, Settings

__all__ = ["DEFAULT_MODEL_DIR", "Settings"]
