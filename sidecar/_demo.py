"""``tollgate demo``: fakes, a sidecar and a mixed workload, end to end on real sockets.

Without API keys every provider is a local fake server speaking its real wire protocol; with a
provider's key set (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``GEMINI_API_KEY``,
``XAI_API_KEY``), that provider is the real one: the code path is the same, only the base URL and
key differ.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from adapters.fakes import ModelBehaviour, StatusFault
from events import (
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    TaskUnrouted,
    open_sqlite_store,
)

from ._config import Config, parse_config
from ._fakes import RunningFake, serve_all_fakes
from ._service import open_sidecar
from ._table import print_table

__all__ = ["demo_config", "run_demo"]

_DEMO_TOML = """
default_route = "chat"

[server]
socket = "tollgate.sock"

[store]
path = "events.db"

[providers.openai]
kind = "openai"
{openai}

[providers.anthropic]
kind = "anthropic"
{anthropic}

[providers.gemini]
kind = "gemini"
{gemini}

[providers.xai]
kind = "xai"
{xai}

[providers.local]
kind = "openai_compatible"
base_url = "{local_url}"

[models.gpt-4o]
provider = "openai"
context_window = 128000
max_output_tokens = 16384
capabilities = ["vision", "tools", "structured_output", "streaming"]

[models.gpt-4o-mini]
provider = "openai"
context_window = 128000
max_output_tokens = 16384
capabilities = ["vision", "tools", "structured_output", "streaming"]

[models.claude-sonnet-4-5]
provider = "anthropic"
context_window = 200000
max_output_tokens = 64000
capabilities = ["vision", "tools", "structured_output", "streaming"]

[models."gemini-2.5-flash"]
provider = "gemini"
context_window = 1048576
max_output_tokens = 65536
capabilities = ["vision", "tools", "structured_output", "streaming"]

[models.grok-4]
provider = "xai"
context_window = 256000
max_output_tokens = 32768
capabilities = ["tools", "structured_output", "streaming"]

[models."llama-3.1-8b"]
provider = "local"
id = "llama3.1:8b"
context_window = 32768
max_output_tokens = 4096
tags = ["pii_safe", "self_hosted"]
# Self-hosted: no published price, so the config gives what it costs to run.
price = {{ input = 0.05, output = 0.05 }}

[classes.flagship]
members = ["claude-sonnet-4-5", "gpt-4o"]
degrade_to = "fast"

[classes.fast]
members = ["gemini-2.5-flash", "gpt-4o-mini"]

[classes.reasoning]
members = ["grok-4", "claude-sonnet-4-5"]

[classes.open-weight]
members = ["llama-3.1-8b"]

[routes.chat]
class = "fast"
max_tokens = 200

[routes.summarize]
class = "fast"
max_tokens = 120

[routes.extract]
class = "fast"
max_tokens = 80

[routes.code]
class = "flagship"
max_tokens = 300

[routes.reason]
class = "reasoning"
max_tokens = 300

[routes.private]
class = "open-weight"
max_tokens = 100
max_degrade = 0
"""

# Each provider is its local fake unless its key is in the environment: (key variable, real URL).
_REAL = {
    "openai": ("OPENAI_API_KEY", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "https://api.anthropic.com"),
    "gemini": ("GEMINI_API_KEY", "https://generativelanguage.googleapis.com"),
    "xai": ("XAI_API_KEY", "https://api.x.ai/v1"),
}
# The upstream ids the fakes see, each paced like a real model.
_FAKE_MODELS = {
    "openai": ("gpt-4o", "gpt-4o-mini", "llama3.1:8b"),
    "anthropic": ("claude-sonnet-4-5",),
    "gemini": ("gemini-2.5-flash",),
    "xai": ("grok-4",),
}
_PACE = ModelBehaviour(answer_tokens=40, chunks=10, ttft_s=0.03, chunk_delay_s=0.005)
# Faults scripted on the code route's primary (claude-sonnet-4-5) for one request each.
_FAULTS = {
    "code (primary 429 once)": (StatusFault(status=429, retry_after_s=0.2, times=1),),
    "code (primary down)": (StatusFault(status=500),),
}

# (label, model field, task header, stream)
_WORKLOAD: list[tuple[str, str, str | None, bool]] = [
    ("summarize", "auto", "summarize", False),
    ("summarize", "auto", "summarize", True),
    ("code", "task:code", None, True),
    ("code (primary 429 once)", "task:code", None, False),
    ("code (primary down)", "task:code", None, True),
    ("reason", "task:reason", None, True),
    ("extract", "auto", "extract", False),
    ("private", "auto", "private", True),
    ("untagged", "auto", None, False),
    ("pinned model", "gpt-4o-mini", "chat", True),
]


def demo_config(
    workdir: Path, fakes: Mapping[str, RunningFake], environ: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    sections = {}
    for name, (variable, url) in _REAL.items():
        if env.get(variable):
            sections[name] = f'base_url = "{url}"\napi_key_env = "{variable}"'
        else:
            sections[name] = f'base_url = "{fakes[name].base_url}"'
    text = _DEMO_TOML.format(local_url=fakes["openai"].base_url, **sections)
    config = parse_config(text, base_dir=workdir, source="<built-in demo config>")
    # Kept beside the log, for the commands that read it afterwards (usage, audit, replay).
    (workdir / "tollgate.toml").write_text(text)
    return config


async def run_demo() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-demo-"))
    async with serve_all_fakes() as fakes:
        for protocol, models in _FAKE_MODELS.items():
            for model in models:
                await fakes[protocol].control.set_model(model, _PACE)
        config = demo_config(workdir, fakes)
        real = [name for name, provider in config.providers.items() if provider.api_key_env]
        if real:
            print(f"Real providers (their keys are set): {', '.join(real)}.\n")
        async with open_sidecar(config) as sidecar:
            ids = [await _send(sidecar.socket_path, fakes, *item) for item in _WORKLOAD]
    # Closing the sidecar committed every event; the table is read back from the log.
    rows, total = await _rows(config.store.path, ids)
    _print_table(rows)
    print(
        "\nTTFT and TTLT are the time to first and last token, measured by the sidecar from the"
        " moment it received the request; cost is priced from each provider's reported usage"
        " (genai-prices, or the config's price for the self-hosted model)."
    )
    print(f"The event log is {config.store.path} ({total} events).")
    print(f"Work directory: {workdir}")
    fell_back = dict(ids)["code (primary down)"]
    print(
        "\nRead it back:\n"
        f"  .venv/bin/tollgate usage --config {workdir}/tollgate.toml --by model,provider\n"
        f"  .venv/bin/tollgate audit {fell_back} --config {workdir}/tollgate.toml"
    )
    return 0


async def _send(
    socket_path: str,
    fakes: Mapping[str, RunningFake],
    label: str,
    model: str,
    task: str | None,
    stream: bool,
) -> tuple[str, str]:
    faults = _FAULTS.get(label, ())
    behaviour = msgspec.structs.replace(_PACE, faults=faults)
    await fakes["anthropic"].control.set_model("claude-sonnet-4-5", behaviour)
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"A demo request for {label}."}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"x-tollgate-tenant": "demo"}
    if task:
        headers["x-tollgate-task"] = task
    connector = aiohttp.UnixConnector(path=socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            "http://tollgate/v1/chat/completions", data=msgspec.json.encode(body), headers=headers
        ) as response,
    ):
        await response.read()
        return label, response.headers.get("x-tollgate-request-id", "")


async def _rows(store_path: str, ids: list[tuple[str, str]]) -> tuple[list[list[str]], int]:
    by_request: dict[str, list[Event]] = {}
    total = 0
    async with open_sqlite_store(store_path) as store:
        after = 0
        while batch := await store.read(after, 1000):
            for stored in batch:
                by_request.setdefault(stored.event.request_id, []).append(stored.event)
            after = batch[-1].seq
            total += len(batch)
    rows = []
    for label, request_id in ids:
        events = by_request.get(request_id, [])
        received = next((e for e in events if isinstance(e, RequestReceived)), None)
        decided = next((e for e in events if isinstance(e, RouteDecided)), None)
        done = next((e for e in events if isinstance(e, RequestCompleted)), None)
        failed = next((e for e in events if isinstance(e, RequestFailed)), None)
        unrouted = any(isinstance(e, TaskUnrouted) for e in events)
        fallbacks = sum(isinstance(e, FallbackTaken) for e in events)
        retries = sum(isinstance(e, RetryScheduled) for e in events)
        row = [
            label,
            "yes" if received and received.stream else "no",
            (decided.route + (" (default)" if unrouted else "")) if decided else "-",
            (decided.model_class or "(pinned)") if decided else "-",
        ]
        if done is not None:
            ttft = "-" if done.ttft_ns is None else f"{done.ttft_ns / 1e6:.1f}"
            row += [
                done.model,
                done.provider,
                ttft,
                f"{done.ttlt_ns / 1e6:.1f}",
                f"{done.usage.input_tokens}/{done.usage.output_tokens}",
                f"{done.cost_micros / 1e6:.6f}",
                ", ".join(
                    ["ok"]
                    + ([f"{retries} retry"] if retries else [])
                    + ([f"{fallbacks} fallback"] if fallbacks else [])
                ),
            ]
        else:
            row += ["-", "-", "-", "-", "-", "-", failed.error_type if failed else "missing"]
        rows.append(row)
    return rows, total


def _print_table(rows: list[list[str]]) -> None:
    header = [
        "request",
        "stream",
        "route",
        "class",
        "model",
        "provider",
        "TTFT ms",
        "TTLT ms",
        "tokens in/out",
        "cost $",
        "result",
    ]
    print_table(header, rows, sys.stdout, rule=True)
