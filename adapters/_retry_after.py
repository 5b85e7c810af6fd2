"""Parsing of the providers' "wait this long" hints."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping

__all__ = ["parse_retry_after", "parse_wait_in_message"]

_WAIT_IN_MESSAGE = re.compile(r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date).

    Returns None when there is no usable hint; never a negative number.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def parse_wait_in_message(message: str) -> float | None:
    """A last resort: "Please try again in 2s" / "Please retry in 34.2s" in an error message."""
    match = _WAIT_IN_MESSAGE.search(message)
    if match is None:
        return None
    amount = float(match.group(1))
    return amount / 1000.0 if match.group(2).lower() == "ms" else amount
