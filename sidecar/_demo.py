"""``tollgate demo``: fakes, a sidecar and a mixed workload, end to end on real sockets.

Without API keys every provider is a local fake server speaking the real wire protocol; with
``OPENAI_API_KEY`` set, the ``openai`` provider is the real one (the code path is the same, only
the base URL and key differ).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from adapters.fakes import ModelBehaviour, StatusFault, serve_fake_openai
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
from ._service import open_sidecar

__all__ = ["demo_config", "run_demo"]

_DEMO_TOML = """
default_route = "chat"

[server]
socket = "tollgate.sock"

[store]
path = "events.db"

[providers.openai]
kind = "openai"
base_url = "{openai_url}"
{openai_key}

[providers.local]
kind = "openai_compatible"
base_url = "{local_url}"
max_tokens_field = "max_tokens"

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

[models."llama-3.1-8b"]
provider = "local"
id = "llama3.1:8b"
context_window = 32768
max_output_tokens = 4096
tags = ["pii_safe", "self_hosted"]

[classes.flagship]
members = ["gpt-4o", "gpt-4o-mini"]
degrade_to = "fast"

[classes.fast]
members = ["gpt-4o-mini", "llama-3.1-8b"]

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

[routes.private]
class = "open-weight"
max_tokens = 100
max_degrade = 0
"""

_PACE = ModelBehaviour(answer_tokens=40, chunks=10, ttft_s=0.03, chunk_delay_s=0.005)
# Faults scripted on gpt-4o (the code route's primary) for one request each.
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
    ("extract", "auto", "extract", False),
    ("private", "auto", "private", True),
    ("chat", "class:fast", "chat", True),
    ("untagged", "auto", None, False),
    ("pinned model", "gpt-4o-mini", "chat", True),
]


def demo_config(workdir: Path, fake_url: str, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    real_openai = bool(env.get("OPENAI_API_KEY"))
    text = _DEMO_TOML.format(
        openai_url="https://api.openai.com/v1" if real_openai else fake_url,
        openai_key='api_key_env = "OPENAI_API_KEY"' if real_openai else "",
        local_url=fake_url,
    )
    return parse_config(text, base_dir=workdir, source="<built-in demo config>")


async def run_demo() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tollgate-demo-"))
    async with serve_fake_openai() as fake:
        # Slow the fakes to a realistic pace so that the timings mean something.
        for model in ("gpt-4o", "gpt-4o-mini", "llama3.1:8b"):
            await fake.control.set_model(model, _PACE)
        config = demo_config(workdir, fake.base_url)
        if config.providers["openai"].api_key_env:
            print("OPENAI_API_KEY is set: the 'openai' provider is the real OpenAI API.\n")
        async with open_sidecar(config) as sidecar:
            ids = [await _send(sidecar.socket_path, fake, *item) for item in _WORKLOAD]
    # Closing the sidecar committed every event; the table is read back from the log.
    rows, total = await _rows(config.store.path, ids)
    _print_table(rows)
    print(
        "\nTTFT and TTLT are the time to first and last token, measured by the sidecar from the"
        " moment it received the request."
    )
    print(f"The event log is {config.store.path} ({total} events).")
    print(f"Work directory: {workdir}")
    return 0


async def _send(
    socket_path: str, fake: Any, label: str, model: str, task: str | None, stream: bool
) -> tuple[str, str]:
    faults = _FAULTS.get(label, ())
    await fake.control.set_model("gpt-4o", msgspec.structs.replace(_PACE, faults=faults))
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
                ", ".join(
                    ["ok"]
                    + ([f"{retries} retry"] if retries else [])
                    + ([f"{fallbacks} fallback"] if fallbacks else [])
                ),
            ]
        else:
            row += ["-", "-", "-", "-", "-", failed.error_type if failed else "missing"]
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
        "result",
    ]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * width for width in widths))
