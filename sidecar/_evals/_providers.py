"""Where evaluations send their calls: each provider's real API, or a local fake of it.

The code path is the same either way (the real adapters, built as the sidecar builds them);
only a provider's base URL and key differ. ``auto`` uses a provider's real API when its key is
configured and resolves, and a fake otherwise (keyless self-hosted servers included, since
nothing says they are running); ``real`` and ``fake`` force one or the other for every provider.
On fakes, the models under evaluation get an answer book (the right answers of the items with
checkers) and a quality, so that a fake model is right on that fraction of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Literal

import msgspec

from adapters import Adapter
from adapters.fakes import BookAnswer, prompt_key
from sidecar._config import Config, ConfigError
from sidecar._fakes import serve_all_fakes
from sidecar._secrets import resolve_api_key
from sidecar._service import build_adapter

from ._tasks import TaskItem

__all__ = ["ProviderMode", "answer_book", "eval_adapters", "fake_seed"]

ProviderMode = Literal["auto", "real", "fake"]

# The fake that speaks each provider kind's protocol.
_FAKE_FOR = {
    "openai": "openai",
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "xai": "xai",
}


def answer_book(items: Sequence[TaskItem]) -> dict[str, BookAnswer]:
    """The right answers of ``items`` (those with a reference), keyed as the fakes key them."""
    book: dict[str, BookAnswer] = {}
    for item in items:
        reference = item.reference
        if reference is None:
            continue
        key = prompt_key(item.request)
        if reference.tool is not None:
            arguments = msgspec.json.encode(reference.arguments).decode()
            book[key] = BookAnswer(tool=reference.tool, arguments=arguments)
        else:
            book[key] = BookAnswer(text=reference.text)
    return book


def fake_seed(model: str) -> int:
    """A fixed seed per model name: two fake models make independent mistakes."""
    return int.from_bytes(hashlib.blake2b(model.encode(), digest_size=4).digest(), "big")


def _is_real(name: str, config: Config, mode: ProviderMode, env: Mapping[str, str]) -> bool:
    provider = config.providers[name]
    if mode != "auto":
        return mode == "real"
    if not (provider.api_key_env or provider.api_key_file):
        return False
    try:
        return resolve_api_key(name, provider, env) is not None
    except ConfigError:
        return False


@contextlib.asynccontextmanager
async def eval_adapters(
    config: Config,
    mode: ProviderMode,
    *,
    models: Mapping[str, float],
    book: Mapping[str, BookAnswer],
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[dict[str, Adapter], dict[str, str]]]:
    """Adapters by provider name, and where each provider's calls go ("real" or "fake").

    ``models``: the models under evaluation and, on a fake, the quality to give each.
    """
    env = os.environ if environ is None else environ
    real = {name: _is_real(name, config, mode, env) for name in config.providers}
    async with contextlib.AsyncExitStack() as stack:
        fakes = await stack.enter_async_context(serve_all_fakes()) if not all(real.values()) else {}
        adapters: dict[str, Adapter] = {}
        try:
            for name, provider in config.providers.items():
                if real[name]:
                    key = resolve_api_key(name, provider, env)
                else:
                    fake = fakes[_FAKE_FOR[provider.kind]]
                    provider = msgspec.structs.replace(
                        provider, base_url=fake.base_url, api_key_env=None, api_key_file=None
                    )
                    key = None
                adapters[name] = build_adapter(name, provider, key)
            for model, quality in models.items():
                settings = config.models[model]
                if real[settings.provider]:
                    continue
                fake = fakes[_FAKE_FOR[config.providers[settings.provider].kind]]
                await fake.control.set_model(
                    settings.id or model,
                    {
                        "answers": msgspec.to_builtins(dict(book)),
                        "quality": quality,
                        "seed": fake_seed(model),
                    },
                )
            yield adapters, {name: "real" if real[name] else "fake" for name in config.providers}
        finally:
            for adapter in adapters.values():
                await adapter.aclose()
