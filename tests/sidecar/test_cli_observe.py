"""``tollgate replay``, ``tail`` and ``usage`` on the log a real sidecar wrote."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest
from e2e_helpers import SidecarFactory, config_text, request_events

from adapters.fakes import FakeOpenAIServer
from events import read_log
from sidecar._cli import main
from sidecar._config import load_config
from sidecar._observe import build_projections


async def served_requests(start_sidecar: SidecarFactory, n: int) -> None:
    async with start_sidecar() as sidecar:
        connector = aiohttp.UnixConnector(path=sidecar.socket_path)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(n):
                body = {"model": "task:chat", "messages": [{"role": "user", "content": f"hi {i}"}]}
                async with session.post(
                    "http://tollgate/v1/chat/completions",
                    json=body,
                    headers={"x-tollgate-tenant": f"t{i % 2}"},
                ) as response:
                    assert response.status == 200
                    await request_events(sidecar, response.headers["x-tollgate-request-id"])


@pytest.fixture
def config_file(short_dir: Path, fake: FakeOpenAIServer) -> Path:
    path = short_dir / "tollgate.toml"
    path.write_text(config_text(fake.base_url))
    return path


async def test_replay_rebuilds_the_checkpoint_the_sidecar_left(
    start_sidecar: SidecarFactory, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await served_requests(start_sidecar, 6)
    config = load_config(config_file)
    assert config.store.checkpoint is not None
    checkpoint = anyio.Path(config.store.checkpoint)
    left = await checkpoint.read_bytes()
    await checkpoint.unlink()
    assert main(["replay", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out and "checkpoint at event" in out
    # The rebuilt checkpoint says what the live one said (the sidecar folded everything).
    live, rebuilt = build_projections(config), build_projections(config)
    live.restore(left)
    rebuilt.restore(await checkpoint.read_bytes())
    assert msgspec.msgpack.encode(rebuilt.state()) == msgspec.msgpack.encode(live.state())
    assert main(["replay", "--config", str(config_file), "--only-usage"]) == 0
    assert "folded" in capsys.readouterr().out


async def test_tail_prints_the_events_asked_for(
    start_sidecar: SidecarFactory, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await served_requests(start_sidecar, 3)
    config = load_config(config_file)
    args = ["tail", "--config", str(config_file), "--from-start", "--type", "request_completed"]
    assert await anyio.to_thread.run_sync(main, [*args, "--count", "3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["event"]["type"] for line in lines] == ["request_completed.v1"] * 3
    assert await anyio.to_thread.run_sync(main, [*args, "--tenant", "t1", "--count", "1"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "request_completed" in line and " t1 " in line and "completed by alpha" in line
    # Following: a tail started at the end prints what is logged after it.
    newest = max(s.seq for s in read_log(config.store.path))
    done = threading.Event()
    result: list[int] = []

    def follow() -> None:
        result.append(main(["tail", "--config", str(config_file), "--count", "1", "--json"]))
        done.set()

    thread = threading.Thread(target=follow)
    thread.start()
    await served_requests(start_sidecar, 1)
    thread.join(10)
    assert done.is_set() and result == [0]
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["seq"] > newest


async def test_usage_rejects_bad_options(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["usage", "--config", str(config_file), "--since", "last week"]) == 2
    assert "neither a date" in capsys.readouterr().err
    assert main(["usage", "--config", str(config_file), "--by", "colour"]) == 2
    assert "--by: unknown dimension(s) colour" in capsys.readouterr().err
    # No sidecar has written a log here yet.
    assert main(["usage", "--config", str(config_file)]) == 1
    assert "cannot read the event log" in capsys.readouterr().err
