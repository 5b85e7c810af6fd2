"""The NATS connection against real nats-servers that require credentials: token, user and
password, nkey. Refused credentials fail clearly and never show the secret."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nkeys
import pytest
from nats_server import NatsServer, running_nats_server
from test_nats_transport import ENV, SUBJECT, body, caller, kind, nats_sidecar

from adapters.fakes import FakeOpenAIServer
from sidecar._config import ConfigError, NatsConfig
from sidecar._nats_connect import (
    NatsAuthError,
    NatsUnreachableError,
    connect_nats,
    redact_url,
)

TOKEN = "tok-3f9a1c7e5b"
PASSWORD = "pw-8d2e6a4c0f"


@pytest.fixture
def token_server() -> Iterator[NatsServer]:
    with running_nats_server(extra_args=("--auth", TOKEN)) as server:
        yield server


@pytest.fixture
def password_server() -> Iterator[NatsServer]:
    with running_nats_server(extra_args=("--user", "tollgate", "--pass", PASSWORD)) as server:
        yield server


def config(url: str, **fields: object) -> NatsConfig:
    return msgspec.convert(
        {"enabled": True, "servers": [url], "connect_timeout_s": 1.0, **fields}, NatsConfig
    )


async def round_trip(url: str, nats_config: NatsConfig, environ: dict[str, str]) -> bytes:
    """Connect with ``nats_config``, then send a message to ourselves through the server."""
    client = await connect_nats(nats_config, environ, wait_s=5)
    try:
        sub = await client.subscribe("check")
        await client.publish("check", b"hello")
        return (await sub.next_msg(timeout=5)).data
    finally:
        await client.close()


async def test_token_auth(token_server: NatsServer) -> None:
    nats_config = config(token_server.url, token_env="NATS_TOKEN")
    assert await round_trip(token_server.url, nats_config, {"NATS_TOKEN": TOKEN}) == b"hello"


async def test_user_and_password_auth(password_server: NatsServer) -> None:
    nats_config = config(password_server.url, user="tollgate", password_env="NATS_PASSWORD")
    environ = {"NATS_PASSWORD": PASSWORD}
    assert await round_trip(password_server.url, nats_config, environ) == b"hello"


async def test_nkey_auth() -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    directory = Path(tempfile.mkdtemp(prefix="tg-nkey-"))
    try:
        seed_file = directory / "user.nk"
        seed_file.write_bytes(seed)
        conf = directory / "nkey.conf"
        conf.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
        with running_nats_server(extra_args=("-c", str(conf))) as server:
            nats_config = config(server.url, nkey_seed_file=str(seed_file))
            assert await round_trip(server.url, nats_config, {}) == b"hello"
            with pytest.raises(NatsAuthError):
                await connect_nats(config(server.url), {}, wait_s=5)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("wrong", ["tok-wrong-1234", TOKEN + "x"])
async def test_a_wrong_token_is_a_clear_error_without_the_secret(
    token_server: NatsServer, wrong: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NatsAuthError) as raised:
        await connect_nats(
            config(token_server.url, token_env="NATS_TOKEN"), {"NATS_TOKEN": wrong}, wait_s=5
        )
    message = str(raised.value)
    assert "refused the credentials" in message
    assert "nats.token_env" in message
    assert token_server.url in message
    for secret in (wrong, TOKEN):
        assert secret not in message
        assert secret not in caplog.text


async def test_a_wrong_password_is_a_clear_error_without_the_secret(
    password_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    nats_config = config(password_server.url, user="tollgate", password_env="NATS_PASSWORD")
    with pytest.raises(NatsAuthError) as raised:
        await connect_nats(nats_config, {"NATS_PASSWORD": "not-" + PASSWORD}, wait_s=5)
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in caplog.text


async def test_the_sidecar_refuses_to_start_with_refused_credentials(
    short_dir: Path, fake: FakeOpenAIServer, token_server: NatsServer
) -> None:
    environ = {**ENV, "NATS_TOKEN": "tok-wrong-1234"}
    with pytest.raises(NatsAuthError):
        async with nats_sidecar(
            short_dir, fake, token_server, environ=environ, nats_extra='token_env = "NATS_TOKEN"'
        ):
            pass
    # With the right token it serves over NATS; callers need the token too.
    environ["NATS_TOKEN"] = TOKEN
    async with (
        nats_sidecar(
            short_dir, fake, token_server, environ=environ, nats_extra='token_env = "NATS_TOKEN"'
        ),
        caller(token_server.url.replace("nats://", f"nats://{TOKEN}@")) as client,
    ):
        reply = await client.request(SUBJECT, body(), timeout=20)
        assert kind(reply) == "done"


async def test_a_missing_secret_names_the_variable(token_server: NatsServer) -> None:
    with pytest.raises(ConfigError, match=r"nats.token_env: environment variable NATS_TOKEN"):
        await connect_nats(config(token_server.url, token_env="NATS_TOKEN"), {}, wait_s=5)
    with pytest.raises(ConfigError, match=r"nats.nkey_seed_file: cannot read /nonexistent"):
        await connect_nats(
            config(token_server.url, nkey_seed_file="/nonexistent/seed"), {}, wait_s=5
        )


async def test_an_unreachable_server_is_a_clear_error_within_the_wait() -> None:
    # Nothing listens on port 1; the URL's password must not show in the error.
    url = f"nats://tollgate:{PASSWORD}@127.0.0.1:1"
    with pytest.raises(NatsUnreachableError) as raised:
        await connect_nats(config(url, connect_timeout_s=0.2), {}, wait_s=0.5)
    message = str(raised.value)
    assert "nats://***@127.0.0.1:1" in message
    assert PASSWORD not in message


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://user:secret@nats.example:4222", "nats://***@nats.example:4222"),
        ("tls://token@nats.example", "tls://***@nats.example"),
    ],
)
def test_urls_are_redacted_for_logs(url: str, safe: str) -> None:
    assert redact_url(url) == safe
