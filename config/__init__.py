"""Every setting of embedq's (env prefix EMBEDQ_, also read from .env)."""

from embedq.config.settings import DEFAULT_MODEL_DIR, ClientSettings, GatewaySettings, Limits, Settings

__all__ = ["DEFAULT_MODEL_DIR", "ClientSettings", "GatewaySettings", "Limits", "Settings"]
