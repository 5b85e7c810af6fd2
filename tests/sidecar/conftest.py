from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from e2e_helpers import make_config

from adapters.fakes import FakeOpenAIServer, FakeOpenAISettings, serve_fake_openai
from sidecar._service import Sidecar, open_sidecar


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="tg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    async with serve_fake_openai(FakeOpenAISettings(api_key="fake-key")) as server:
        yield server


@pytest.fixture
def start_sidecar(
    short_dir: Path, fake: FakeOpenAIServer
) -> Callable[..., contextlib.AbstractAsyncContextManager[Sidecar]]:
    @contextlib.asynccontextmanager
    async def start(*, key: str = "fake-key", **options: object) -> AsyncIterator[Sidecar]:
        config = make_config(short_dir, fake.base_url, **options)  # type: ignore[arg-type]
        env = {"TEST_PROVIDER_KEY": key, "TEST_BACKUP_KEY": "fake-key"}
        async with open_sidecar(config, environ=env) as sidecar:
            yield sidecar

    return start


@pytest.fixture
async def sidecar(
    start_sidecar: Callable[..., contextlib.AbstractAsyncContextManager[Sidecar]],
) -> AsyncIterator[Sidecar]:
    async with start_sidecar() as running:
        yield running


@pytest.fixture
async def client(sidecar: Sidecar) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI client, talking to the sidecar over its Unix socket."""
    transport = httpx2.AsyncHTTPTransport(uds=sidecar.socket_path)
    async with openai.AsyncOpenAI(
        base_url="http://tollgate/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    ) as c:
        yield c


@pytest.fixture
async def direct(fake: FakeOpenAIServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The same client talking straight to the fake: the baseline the sidecar must match."""
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="fake-key", max_retries=0) as c:
        yield c
