"""Self-hosted OpenAI-compatible servers (vLLM, llama.cpp's llama-server, Ollama, TGI, ...).

They speak Chat Completions (:class:`~adapters.OpenAIAdapter` does the work), each with its own
gaps. The choices made here, so that any of them works without per-server settings:

* **Auth is optional.** With no key, no ``Authorization`` header is sent at all: some servers
  reject an empty ``Bearer``.
* **Max tokens** go in ``max_tokens`` by default: the field every server reads.
  ``max_completion_tokens`` is newer and older servers ignore it silently, which would leave
  the call (and its cost) unbounded. Configurable per provider.
* **Usage may be missing.** ``stream_options.include_usage`` is still sent (without it no
  server reports a stream's usage), and if the answer has no ``usage`` there is simply no
  :class:`~adapters.UsageReport`; the caller falls back to its own estimate. A server too old
  to know ``stream_options`` and strict about unknown fields answers 400; that surfaces as a
  ``bad_request`` naming the field, rather than being guessed at and retried without it.
* **Chunks may lack** ``id``, ``model``, ``created`` or ``object``: none of them is read.
* **Error bodies vary**: OpenAI's ``{"error": {...}}``, ``{"error": "text"}`` (Ollama), a
  top-level ``{"object": "error", "message": ...}`` (older vLLM), FastAPI's ``{"detail": ...}``
  (a string, or a list of validation errors), or plain text. The message is taken from
  whichever is there; the class comes from the **status** (401/403 auth, 404 not found,
  408/504 timeout, 429 rate limited, 503 overloaded, other 5xx server error, other 4xx bad
  request), except that a prompt too long for the context is recognised by its wording at any
  status (llama.cpp has answered it with a 500). A mid-stream error event without a status
  uses the numeric ``code`` inside it when that is an HTTP status (vLLM and llama.cpp put one
  there), else counts as a server error.
* **The stream must end with** ``data: [DONE]`` (vLLM, llama.cpp and Ollama send it);
  without it the answer counts as truncated, as for OpenAI.
"""

from __future__ import annotations

import re
from typing import Any

from ._errors import ErrorClass
from ._openai import OpenAIAdapter, classify_openai_error

__all__ = ["OpenAICompatibleAdapter", "classify_compatible_error"]

# Context-overflow wordings of self-hosted servers beyond the hosted providers' (which
# classify_openai_error knows): llama.cpp's server, llama-cpp-python, and TGI.
_SELF_HOSTED_OVERFLOW = re.compile(
    r"exceed_context_size_error|exceeds the available context size"
    r"|exceed context window|`inputs` tokens \+ `max_new_tokens` must be <=",
    re.IGNORECASE,
)


def classify_compatible_error(
    status: int | None, error_type: str | None, code: str | None, message: str
) -> tuple[ErrorClass, bool]:
    """Map a self-hosted server's error to the taxonomy, mostly by status; returns
    (class, is_quota). ``status`` is None for an error event inside a 200 stream."""
    if error_type == "exceed_context_size_error" or _SELF_HOSTED_OVERFLOW.search(message):
        return ErrorClass.CONTEXT_OVERFLOW, False
    if status is None and code is not None and code.isdigit() and 400 <= int(code) <= 599:
        status = int(code)
    return classify_openai_error(status, error_type, code, message)


class OpenAICompatibleAdapter(OpenAIAdapter):
    """Chat Completions at ``{base_url}/chat/completions`` of a self-hosted server."""

    def __init__(
        self,
        provider: str,
        *,
        base_url: str,
        api_key: str | None = None,
        api_version: str | None = None,
        max_tokens_field: str = "max_tokens",
        connect_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        # These servers have no API versions; accepted so every provider kind takes the same
        # settings.
        del api_version
        super().__init__(
            provider,
            base_url=base_url,
            api_key=api_key,
            max_tokens_field=max_tokens_field,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )

    def _error_fields(self, envelope: Any) -> tuple[str, str | None, str | None]:
        if isinstance(envelope, dict) and "error" not in envelope and "detail" in envelope:
            return _detail_message(envelope["detail"]), None, None
        return super()._error_fields(envelope)

    def _classify(
        self, status: int | None, error_type: str | None, code: str | None, message: str
    ) -> tuple[ErrorClass, bool]:
        return classify_compatible_error(status, error_type, code, message)


def _detail_message(detail: Any) -> str:
    """FastAPI's ``detail``: a string, or a list of ``{"loc": [...], "msg": ...}`` errors."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and isinstance(item.get("msg"), str):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        return "; ".join(parts)
    if isinstance(detail, dict):
        for key in ("message", "msg"):
            if isinstance(detail.get(key), str):
                return str(detail[key])
    return ""
