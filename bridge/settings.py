"""Process settings: environment (``BRIDGE_*``), secrets directory, then defaults.

Precedence, highest first: command-line flags (applied by the CLI), environment
variables, files in the secrets directory (``/run/secrets/bridge_<name>``), defaults.
These override the config file's ``server.listen``, ``store`` and log level.
"""

from __future__ import annotations

import os

from pydantic_settings import BaseSettings, SettingsConfigDict

_SECRETS_DIR = os.environ.get("BRIDGE_SECRETS_DIR", "/run/secrets")


class Settings(BaseSettings):
    """Settings of one bridge process."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_",
        secrets_dir=_SECRETS_DIR if os.path.isdir(_SECRETS_DIR) else None,
        extra="ignore",
    )

    config: str = "bridge.yaml"
    listen: str | None = None
    store: str | None = None
    log_level: str | None = None
    log_format: str | None = None
