"""Every fake provider server at once, for ``tollgate fakes``, the demo and the tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from adapters.fakes import (
    FakeOpenAIControl,
    serve_fake_anthropic,
    serve_fake_gemini,
    serve_fake_openai,
    serve_fake_xai,
)

__all__ = ["FAKE_PROTOCOLS", "RunningFake", "serve_all_fakes"]

# Provider kind in the config -> the fake that speaks its protocol. Self-hosted servers speak
# OpenAI's, so the OpenAI fake stands in for them.
FAKE_PROTOCOLS = ("openai", "anthropic", "gemini", "xai")


class RunningFake(Protocol):
    """What callers need of a running fake: where it is and how to script it."""

    @property
    def url(self) -> str: ...

    @property
    def base_url(self) -> str:
        """What the protocol's clients take as their base URL."""
        ...

    @property
    def control(self) -> FakeOpenAIControl: ...


@contextlib.asynccontextmanager
async def serve_all_fakes(host: str = "127.0.0.1") -> AsyncIterator[dict[str, RunningFake]]:
    """One fake per protocol on its own free port, by protocol name."""
    async with contextlib.AsyncExitStack() as stack:
        serves: dict[str, Callable[..., AbstractAsyncContextManager[RunningFake]]] = {
            "openai": serve_fake_openai,
            "anthropic": serve_fake_anthropic,
            "gemini": serve_fake_gemini,
            "xai": serve_fake_xai,
        }
        yield {
            name: await stack.enter_async_context(serve(host=host))
            for name, serve in serves.items()
        }
