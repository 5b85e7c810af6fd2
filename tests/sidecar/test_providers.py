"""The sidecar routes to every provider kind: each speaks its own protocol to its fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from sidecar._config import parse_config
from sidecar._fakes import RunningFake, serve_all_fakes
from sidecar._service import Sidecar, open_sidecar

# (provider kind, fake protocol, upstream model id)
KINDS = [
    ("openai", "openai", "gpt-x"),
    ("anthropic", "anthropic", "claude-x"),
    ("gemini", "gemini", "gemini-x"),
    ("xai", "xai", "grok-x"),
    ("openai_compatible", "openai", "llama-x"),
]


def five_provider_config(directory: Path, fakes: dict[str, RunningFake]) -> str:
    parts = ['default_route = "chat"\n[server]\nsocket = "s.sock"\n[store]\npath = "e.db"\n']
    for kind, protocol, model in KINDS:
        parts.append(
            f'[providers.{kind}]\nkind = "{kind}"\nbase_url = "{fakes[protocol].base_url}"\n'
            f'api_key_env = "KEY"\n'
            f'[models.{model}]\nprovider = "{kind}"\ncontext_window = 100000\n'
            "price = { input = 1.0, output = 2.0 }\n"
        )
    parts.append('[classes.all]\nmembers = ["gpt-x"]\n[routes.chat]\nclass = "all"\n')
    return "\n".join(parts)


@pytest.fixture
async def five(short_dir: Path) -> AsyncIterator[tuple[Sidecar, dict[str, RunningFake]]]:
    async with serve_all_fakes() as fakes:
        config = parse_config(five_provider_config(short_dir, fakes), base_dir=short_dir)
        async with open_sidecar(config, environ={"KEY": "k"}) as sidecar:
            yield sidecar, fakes


@pytest.mark.parametrize(("kind", "protocol", "model"), KINDS)
async def test_each_provider_kind_serves_streamed_and_not(
    five: tuple[Sidecar, dict[str, RunningFake]], kind: str, protocol: str, model: str
) -> None:
    sidecar, fakes = five
    transport = httpx2.AsyncHTTPTransport(uds=sidecar.socket_path)
    messages: list[Any] = [{"role": "user", "content": f"Hello {kind}."}]
    async with openai.AsyncOpenAI(
        base_url="http://tollgate/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=20
        )
        whole = raw.parse()
        assert raw.headers["x-tollgate-provider"] == kind
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content
    assert text == whole.choices[0].message.content
    assert whole.usage is not None
    assert chunks[-1].usage is not None
    # The same call costs the same tokens streamed or not, whatever the provider's usage shape.
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens > 0
    stats = await fakes[protocol].control.stats()
    assert stats.models[model].requests == 2
