"""Fixtures for the fake provider servers' tests: a real server on a free loopback port."""

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from adapters.fakes import FakeOpenAISettings, FakeServer, serve_fake_openai

API_KEY = "sk-fake-test-key-0123456789abcdef"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with serve_fake_openai(FakeOpenAISettings(api_key=API_KEY)) as server:
        yield server


@pytest.fixture
async def client(fake: FakeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:
        yield session
