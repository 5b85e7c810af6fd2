"""The ``tollgate`` command, run as a real process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import msgspec
from anyio.abc import Process
from e2e_helpers import config_text

from adapters.fakes import FakeOpenAIServer
from events import RequestCompleted, open_sqlite_store

TOLLGATE = [sys.executable, "-c", "import sys; from sidecar._cli import main; sys.exit(main())"]


@contextlib.asynccontextmanager
async def running(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Process]:
    """``tollgate ARGS`` as a process, killed on the way out if it is still running."""
    process = await anyio.open_process([*TOLLGATE, *args], env=env)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(process: Process) -> int:
    """SIGTERM, then the exit status (a clean shutdown is 0)."""
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        return await process.wait()


def test_demo_runs_and_prints_the_table() -> None:
    result = subprocess.run(
        [*TOLLGATE, "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("request"))
    assert "TTFT ms" in header and "provider" in header
    rows = [line for line in lines[lines.index(header) + 2 :] if line.strip()][:10]
    assert len(rows) == 10
    assert all(" ok" in row for row in rows), result.stdout

    def row(label: str) -> str:
        return next(r for r in rows if r.startswith(label))

    assert "1 retry" in row("code (primary 429 once)")
    # Served by the primary after the wait...
    assert " anthropic " in row("code (primary 429 once)")
    # ... and by the next candidate, another provider, when the primary stays down.
    assert "1 retry, 1 fallback" in row("code (primary down)")
    assert " openai " in row("code (primary down)")
    # Every provider kind serves something.
    providers = {word for r in rows for word in r.split()}
    assert {"openai", "anthropic", "gemini", "xai", "local"} <= providers
    assert "(default)" in row("untagged")
    assert " local " in row("private")
    assert "The event log is" in result.stdout


def test_invalid_config_exits_with_the_key_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('default_route = "x"\n[providers]\n[models]\n[classes]\n[routes]\n')
    result = subprocess.run(
        [*TOLLGATE, "serve", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "default_route: unknown route 'x'" in result.stderr


async def test_serve_answers_then_shuts_down_cleanly_on_sigterm(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    config = short_dir / "tollgate.toml"
    config.write_text(config_text(fake.base_url))
    env = {**os.environ, "TEST_PROVIDER_KEY": "fake-key", "TEST_BACKUP_KEY": "fake-key"}
    socket_path = short_dir / "s.sock"
    async with running("serve", "--config", str(config), env=env) as process:
        with anyio.fail_after(20):
            # Another process creates it: there is nothing to wait on but the file system.
            while not socket_path.exists():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        body = msgspec.json.encode(
            {"model": "task:chat", "messages": [{"role": "user", "content": "hi"}]}
        )
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post("http://tollgate/v1/chat/completions", data=body) as response,
        ):
            assert response.status == 200
            request_id = response.headers["x-tollgate-request-id"]
        assert await stop(process) == 0
    assert not socket_path.exists()  # removed on the way out
    async with open_sqlite_store(str(short_dir / "events.db")) as store:
        events = await store.read_request(request_id)
    assert isinstance(events[-1].event, RequestCompleted)  # committed before exit


async def test_fakes_command_prints_its_url_and_serves() -> None:
    async with running("fakes") as process:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = b""
            async for data in process.stdout:
                line += data
                if b"\n" in line:
                    break
        name, url = line.decode().split()[:2]
        assert name == "openai"  # then anthropic, gemini and xai, one line each
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/models") as response:
            assert response.status == 200
        assert await stop(process) == 0
