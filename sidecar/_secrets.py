"""API keys: read from the environment or a file at start-up, and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping

from ._config import ConfigError, ProviderConfig

__all__ = ["resolve_api_key"]


def resolve_api_key(name: str, provider: ProviderConfig, environ: Mapping[str, str]) -> str | None:
    """The provider's key, or None for a keyless (self-hosted) provider.

    Errors name the variable or file, never any of its content.
    """
    if provider.api_key_env:
        value = environ.get(provider.api_key_env, "").strip()
        if not value:
            raise ConfigError(
                f"providers.{name}.api_key_env: environment variable "
                f"{provider.api_key_env} is not set or empty"
            )
        return value
    if provider.api_key_file:
        try:
            with open(provider.api_key_file, encoding="utf-8") as file:
                value = file.read().strip()
        except OSError as exc:
            raise ConfigError(
                f"providers.{name}.api_key_file: cannot read {provider.api_key_file}: "
                f"{exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"providers.{name}.api_key_file: {provider.api_key_file} is empty")
        return value
    return None
