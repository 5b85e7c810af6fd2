"""Any language: the README's JavaScript client (the ``nats`` npm package, installed here by
``npm ci``) and its Python client call a real sidecar over a real nats-server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from e2e_helpers import request_events
from nats_server import NatsServer
from test_nats_transport import ask, caller, decode, nats_sidecar

from adapters.fakes import FakeOpenAIServer, ModelBehaviour
from sidecar._service import Sidecar

NODE_DIR = Path(__file__).resolve().parent / "node"
README = Path(__file__).resolve().parents[2] / "README.md"
PROMPT = "Summarize: NATS is a messaging system."
NPM_TIMEOUT_S = 45


def readme_block(language: str) -> str:
    """The ``language`` code block of the README's "Over NATS" section."""
    text = README.read_text()
    start = text.index("\n## Over NATS\n")
    section = text[start : text.index("\n## ", start + 1)]
    match = re.search(rf"\n```{language}\n(.*?)\n```\n", section, re.DOTALL)
    assert match is not None, f"no {language} block in the README's Over NATS section"
    return match.group(1) + "\n"


@pytest.fixture(scope="module")
def node() -> str:
    """``node``, with the client's dependencies installed from its lockfile."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        # CI machines have Node.js: a missing one is a broken machine, not a reason to skip.
        pytest.fail("node and npm are required for the any-language client test")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci failed in {NODE_DIR}:\n{result.stdout}\n{result.stderr}")
    return node


@pytest.fixture
async def served(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer
) -> AsyncIterator[Sidecar]:
    # Several chunks apart in time: the stream has several delta messages.
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=12, chunks=4, chunk_delay_s=0.01)
    )
    async with nats_sidecar(short_dir, fake, nats_server) as sidecar:
        yield sidecar


async def python_answer(url: str) -> dict[str, Any]:
    """The same request from the Python client, as the reference."""
    request = {"model": "task:summarize", "messages": [{"role": "user", "content": PROMPT}]}
    async with caller(url) as client:
        reply = await ask(client, msgspec.json.encode(request), {"Tollgate-Tenant": "acme"})
    answer: dict[str, Any] = decode(reply)
    return answer


async def run(command: list[str], url: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        command, cwd=NODE_DIR, env={**os.environ, "NATS_URL": url, **env}, check=False
    )


async def test_the_javascript_client_streamed_and_not(
    node: str, served: Sidecar, nats_server: NatsServer
) -> None:
    result = await run([node, "client.mjs", PROMPT], nats_server.url)
    assert result.returncode == 0, result.stderr.decode()
    completion, stream = (json.loads(line) for line in result.stdout.decode().splitlines())
    reference = await python_answer(nats_server.url)
    assert completion["reply"] == "completion"
    assert completion["content"] == reference["choices"][0]["message"]["content"]
    assert completion["usage"] == reference["usage"]
    assert stream["reply"] == "stream"
    assert stream["content"] == completion["content"]
    assert stream["usage"] == completion["usage"]
    assert stream["finish_reason"] == "stop"
    # The client checked Tollgate-Seq 1..n; more than one delta came before done.
    assert stream["messages"] > 2
    for summary in (completion["tollgate"], stream["tollgate"]):
        assert (summary["model"], summary["provider"]) == ("alpha", "primary")
        assert summary["cost_usd"] > 0
        events = await request_events(served, summary["request_id"])
        assert events[0].event.tenant == "acme"
    assert stream["tollgate"]["ttft_ms"] <= stream["tollgate"]["ttlt_ms"]


async def test_the_javascript_client_gets_typed_errors(
    node: str, served: Sidecar, nats_server: NatsServer
) -> None:
    result = await run([node, "client.mjs"], nats_server.url, TOLLGATE_MODEL="gpt-17")
    assert result.returncode == 1
    assert "tollgate: invalid_request (model_not_found)" in result.stderr.decode()


async def test_the_javascript_client_is_the_readme_example() -> None:
    assert readme_block("js") == (NODE_DIR / "client.mjs").read_text()


async def test_the_readme_python_client(
    served: Sidecar, nats_server: NatsServer, short_dir: Path
) -> None:
    script = short_dir / "client.py"
    script.write_text(readme_block("python"))
    result = await run([sys.executable, str(script), PROMPT], nats_server.url)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    reference = await python_answer(nats_server.url)
    content = reference["choices"][0]["message"]["content"]
    # The answer, its summary, the same answer streamed, then usage and summary.
    assert lines[0] == content
    assert "'model': 'alpha'" in lines[1]
    assert lines[2] == content
    assert "'completion_tokens': 12" in lines[3]
