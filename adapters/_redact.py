"""Keeping credentials out of error messages and logs."""

from __future__ import annotations

import re

__all__ = ["redact"]

# Key shapes providers echo back (OpenAI "sk-...", xAI "xai-...", Google "AIza..."), masked or not.
_KEY_LIKE = re.compile(r"\b(?:sk-|xai-|AIza)[A-Za-z0-9_\-*.]{4,}")


def redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return _KEY_LIKE.sub("[redacted]", text)
