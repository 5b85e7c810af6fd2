"""The NATS transport end to end: a real nats-server, the real sidecar, the real fake provider,
and the official ``nats`` Python client as the caller."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import nats
import nats.errors
import pytest
from e2e_helpers import config_text, only, request_events
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats_server import NatsServer, running_nats_server

from adapters.fakes import FakeOpenAIServer, MidStreamErrorFault, ModelBehaviour, StatusFault
from events import RequestCompleted, RequestFailed, RequestReceived, read_log
from sidecar._config import Config, parse_config
from sidecar._nats_connect import NatsUnreachableError
from sidecar._service import Sidecar, open_sidecar

SUBJECT = "tollgate.v1.chat"
MESSAGES: list[Any] = [{"role": "user", "content": "Say something deterministic."}]
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ENV = {"TEST_PROVIDER_KEY": "fake-key", "TEST_BACKUP_KEY": "fake-key"}
# Only a guard against a hang: every awaited reply comes long before it.
REPLY_TIMEOUT_S = 20.0


def nats_config(
    directory: Path,
    fake_url: str,
    nats_url: str,
    *,
    nats_extra: str = "",
    store_extra: str = "",
    **options: Any,
) -> Config:
    """The e2e config of ``e2e_helpers`` with ``[nats]`` enabled."""
    text = config_text(fake_url, **options).replace("[store]\n", f"[store]\n{store_extra}\n")
    text += (
        f'\n[nats]\nenabled = true\nservers = ["{nats_url}"]\nreconnect_wait_s = 0.1\n'
        f"connect_timeout_s = 1.0\n{nats_extra}"
    )
    directory.mkdir(parents=True, exist_ok=True)
    return parse_config(text, base_dir=directory)


@contextlib.asynccontextmanager
async def nats_sidecar(
    directory: Path,
    fake: FakeOpenAIServer,
    server: NatsServer,
    *,
    environ: Mapping[str, str] = ENV,
    wait_serving: bool = True,
    **options: Any,
) -> AsyncIterator[Sidecar]:
    """A sidecar serving over NATS; with ``wait_serving``, once it is subscribed (on a busy
    machine its first connection try may time out, and then it connects in the background)."""
    config = nats_config(directory, fake.base_url, server.url, **options)
    async with open_sidecar(config, environ=environ) as sidecar:
        if wait_serving:
            assert sidecar.nats is not None
            with anyio.fail_after(REPLY_TIMEOUT_S):
                await sidecar.nats.serving.wait()
        yield sidecar


@contextlib.asynccontextmanager
async def caller(url: str) -> AsyncIterator[Client]:
    client = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    try:
        yield client
    finally:
        await client.close()


def body(**extra: Any) -> bytes:
    return msgspec.json.encode({"model": "task:chat", "messages": MESSAGES, **extra})


def kind(msg: Msg) -> str:
    assert msg.headers is not None
    assert "Tollgate-Kind" in msg.headers, (msg.headers, msg.data)
    return msg.headers["Tollgate-Kind"]


async def ask(client: Client, data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return await client.request(SUBJECT, data, timeout=REPLY_TIMEOUT_S, headers=headers)


async def ask_stream(
    client: Client, data: bytes, headers: dict[str, str] | None = None
) -> list[Msg]:
    """Every message of a streamed reply, up to and including its done or error."""
    inbox = client.new_inbox()
    sub = await client.subscribe(inbox)
    try:
        await client.publish(SUBJECT, data, reply=inbox, headers=headers)
        replies = []
        while True:
            msg = await sub.next_msg(timeout=REPLY_TIMEOUT_S)
            replies.append(msg)
            if kind(msg) in ("done", "error"):
                return replies
    finally:
        await sub.unsubscribe()


def decode(msg: Msg) -> Any:
    return msgspec.json.decode(msg.data)


@pytest.fixture
async def served(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer
) -> AsyncIterator[Sidecar]:
    async with nats_sidecar(short_dir, fake, nats_server) as sidecar:
        yield sidecar


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    async with caller(nats_server.url) as client:
        yield client


async def unix_post(sidecar: Sidecar, data: bytes) -> tuple[int, Any]:
    connector = aiohttp.UnixConnector(path=sidecar.socket_path)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post("http://tollgate/v1/chat/completions", data=data) as response,
    ):
        return response.status, msgspec.json.decode(await response.read())


# --- Replies -----------------------------------------------------------------------------------


async def test_a_non_streamed_reply_is_the_http_completion_plus_a_summary(
    served: Sidecar, nc: Client
) -> None:
    reply = await ask(nc, body())
    assert reply.headers is not None
    headers = reply.headers
    assert headers["Tollgate-Kind"] == "done"
    assert headers["Tollgate-Seq"] == "1"
    assert UUID7.match(headers["Tollgate-Request-Id"])
    assert (headers["Tollgate-Model"], headers["Tollgate-Provider"]) == ("alpha", "primary")
    assert headers["Tollgate-Route"] == "chat"
    completion = decode(reply)
    assert completion["object"] == "chat.completion"
    summary = completion["tollgate"]
    assert summary["request_id"] == headers["Tollgate-Request-Id"]
    assert summary["cost_usd"] > 0
    assert float(headers["Tollgate-Cost-Usd"]) == pytest.approx(summary["cost_usd"])
    assert summary["attempts"] == 1
    assert summary["fallbacks"] == 0
    # The same answer and usage as over the Unix socket.
    status, http = await unix_post(served, body())
    assert status == 200
    assert completion["choices"][0]["message"] == http["choices"][0]["message"]
    assert completion["usage"] == http["usage"]
    events = await request_events(served, headers["Tollgate-Request-Id"])
    received = only(events, RequestReceived)[0]
    assert isinstance(received, RequestReceived)
    assert received.transport == "nats"
    assert isinstance(events[-1].event, RequestCompleted)


async def test_a_streamed_reply_is_numbered_deltas_then_done(
    served: Sidecar, nc: Client, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=12, chunks=6, chunk_delay_s=0.01)
    )
    unary = decode(await ask(nc, body()))
    replies = await ask_stream(nc, body(stream=True))
    assert [m.headers["Tollgate-Seq"] for m in replies if m.headers] == [
        str(n) for n in range(1, len(replies) + 1)
    ]
    kinds = [kind(m) for m in replies]
    assert kinds[-1] == "done"
    assert set(kinds[:-1]) == {"delta"}
    # The chunks arrive 10 ms apart: they can't all ride in one message.
    assert len(replies) > 2
    deltas = [decode(m) for m in replies[:-1]]
    assert all(d["object"] == "chat.completion.chunk" for d in deltas)
    assert deltas[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(d["choices"][0]["delta"].get("content", "") for d in deltas)
    assert text == unary["choices"][0]["message"]["content"]
    done = decode(replies[-1])
    assert done["choices"][0]["finish_reason"] == "stop"
    assert done["usage"] == unary["usage"]
    summary = done["tollgate"]
    assert (summary["model"], summary["provider"], summary["route"]) == ("alpha", "primary", "chat")
    assert summary["cost_usd"] == unary["tollgate"]["cost_usd"]
    assert 0 < summary["ttft_ms"] <= summary["ttlt_ms"]
    headers = replies[-1].headers
    assert headers is not None
    assert headers["Tollgate-Request-Id"] == summary["request_id"]
    assert float(headers["Tollgate-Ttft-Ms"]) == pytest.approx(summary["ttft_ms"], abs=1e-3)
    assert float(headers["Tollgate-Ttlt-Ms"]) == pytest.approx(summary["ttlt_ms"], abs=1e-3)
    events = await request_events(served, summary["request_id"])
    completed = events[-1].event
    assert isinstance(completed, RequestCompleted)
    assert completed.usage.output_tokens == done["usage"]["completion_tokens"]


async def test_task_and_tenant_come_from_headers_or_metadata(served: Sidecar, nc: Client) -> None:
    plain = {"model": "auto", "messages": MESSAGES}
    by_header = await ask(
        nc,
        msgspec.json.encode(plain),
        headers={"Tollgate-Task": "wide", "tollgate-tenant": "acme"},
    )
    assert by_header.headers is not None
    assert by_header.headers["Tollgate-Route"] == "wide"
    assert by_header.headers["Tollgate-Model"] == "beta"
    by_metadata = await ask(
        nc, msgspec.json.encode({**plain, "metadata": {"task": "wide", "tenant": "globex"}})
    )
    assert by_metadata.headers is not None
    assert by_metadata.headers["Tollgate-Route"] == "wide"
    tenants = []
    for reply in (by_header, by_metadata):
        assert reply.headers is not None
        events = await request_events(served, reply.headers["Tollgate-Request-Id"])
        tenants.append(events[0].event.tenant)
    assert tenants == ["acme", "globex"]


# --- Typed errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "headers", "error_type", "code", "status"),
    [
        (b"{not json", None, "invalid_request", "invalid_json", "400"),
        (b"[1, 2]", None, "invalid_request", "invalid_type", "400"),
        (
            b'{"model": "task:chat", "messages": "hi"}',
            None,
            "invalid_request",
            "invalid_type",
            "400",
        ),
        (body(messages=[]), None, "invalid_request", "invalid_request", "400"),
        (body(model="gpt-17"), None, "invalid_request", "model_not_found", "404"),
        (body(model="class:premium"), None, "invalid_request", "class_not_found", "404"),
        (
            body(),
            {"Tollgate-Tenant": "no spaces allowed"},
            "invalid_request",
            "invalid_request",
            "400",
        ),
    ],
)
async def test_bad_requests_get_typed_errors_and_serving_goes_on(
    served: Sidecar,
    nc: Client,
    data: bytes,
    headers: dict[str, str] | None,
    error_type: str,
    code: str,
    status: str,
) -> None:
    for stream in (False, True):
        streamed = stream and data.startswith(b'{"model"')
        if streamed:
            request = msgspec.json.decode(data)
            replies = await ask_stream(
                nc, msgspec.json.encode({**request, "stream": True}), headers
            )
            assert len(replies) == 1
            reply = replies[0]
        else:
            reply = await ask(nc, data, headers)
        assert reply.headers is not None
        assert reply.headers["Tollgate-Kind"] == "error"
        assert reply.headers["Tollgate-Seq"] == "1"
        assert reply.headers["Tollgate-Status"] == status
        assert reply.headers["Tollgate-Error-Type"] == error_type
        error = decode(reply)["error"]
        assert (error["type"], error["code"]) == (error_type, code)
        assert error["message"]
    good = await ask(nc, body())
    assert kind(good) == "done"


async def test_an_unknown_task_takes_the_default_route(served: Sidecar, nc: Client) -> None:
    reply = await ask(nc, body(model="auto"), headers={"Tollgate-Task": "no-such-task"})
    assert reply.headers is not None
    assert reply.headers["Tollgate-Kind"] == "done"
    assert reply.headers["Tollgate-Route"] == "chat"


async def test_all_candidates_failing_is_a_typed_error(
    served: Sidecar, nc: Client, fake: FakeOpenAIServer
) -> None:
    for model in ("alpha-1", "beta-1"):
        await fake.control.set_model(model, ModelBehaviour(faults=(StatusFault(status=500),)))
    reply = await ask(nc, body())
    replies = await ask_stream(nc, body(stream=True))
    assert len(replies) == 1
    for msg in (reply, replies[0]):
        assert msg.headers is not None
        assert msg.headers["Tollgate-Kind"] == "error"
        assert msg.headers["Tollgate-Status"] == "502"
        error = decode(msg)["error"]
        assert error["type"] == "all_candidates_failed"
        attempts = error["tollgate"]["attempts"]
        assert {a["model"] for a in attempts} == {"alpha", "beta"}
        assert {a["error_class"] for a in attempts} == {"server_error"}
        events = await request_events(served, msg.headers["Tollgate-Request-Id"])
        assert isinstance(events[-1].event, RequestFailed)
    await fake.control.reset()
    assert kind(await ask(nc, body())) == "done"


async def test_a_stream_broken_after_tokens_ends_with_an_error(
    served: Sidecar, nc: Client, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model(
        "alpha-1",
        ModelBehaviour(
            answer_tokens=10, chunk_delay_s=0.01, faults=(MidStreamErrorFault(after_chunks=3),)
        ),
    )
    replies = await ask_stream(nc, body(stream=True))
    assert [kind(m) for m in replies[:-1]] == ["delta"] * (len(replies) - 1)
    assert len(replies) > 1
    error = decode(replies[-1])["error"]
    assert error["type"] == "upstream_stream_broken"
    assert error["tollgate"]["chunks_delivered"] == 3


# --- Sizes -------------------------------------------------------------------------------------


async def test_a_body_over_max_body_bytes_is_refused_typed(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer, nc: Client
) -> None:
    async with nats_sidecar(short_dir, fake, nats_server, server_extra="max_body_bytes = 2000"):
        big = body(messages=[{"role": "user", "content": "x" * 5000}])
        reply = await ask(nc, big)
        assert kind(reply) == "error"
        assert decode(reply)["error"]["code"] == "body_too_large"
        assert kind(await ask(nc, body())) == "done"


@pytest.fixture
def small_payload_server() -> Any:
    """A nats-server whose max_payload is 4 KiB."""
    directory = Path(tempfile.mkdtemp(prefix="tg-conf-"))
    conf = directory / "small.conf"
    conf.write_text("max_payload: 4096\n")
    try:
        with running_nats_server(extra_args=("-c", str(conf))) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_replies_beyond_max_payload(
    short_dir: Path, fake: FakeOpenAIServer, small_payload_server: NatsServer
) -> None:
    # About 6 KB of answer: more than one message can hold.
    await fake.control.set_model("alpha-1", ModelBehaviour(answer_tokens=1200, chunks=3))
    async with (
        nats_sidecar(short_dir, fake, small_payload_server) as sidecar,
        caller(small_payload_server.url) as client,
    ):
        assert client.max_payload == 4096
        # Not streamed: the completion can't be sent, so a typed error says why.
        reply = await ask(client, body(max_tokens=2000))
        assert reply.headers is not None
        assert reply.headers["Tollgate-Kind"] == "error"
        assert reply.headers["Tollgate-Status"] == "413"
        error = decode(reply)["error"]
        assert error["code"] == "reply_too_large"
        assert "stream" in error["message"]
        # Streamed: the same answer split into messages that each fit.
        replies = await ask_stream(client, body(max_tokens=2000, stream=True))
        assert kind(replies[-1]) == "done"
        text = "".join(decode(m)["choices"][0]["delta"].get("content", "") for m in replies[:-1])
        assert len(text.split()) == 1200
        assert decode(replies[-1])["usage"]["completion_tokens"] == 1200
        # A request beyond max_payload never leaves the caller: its client refuses it.
        with pytest.raises(nats.errors.MaxPayloadError):
            await ask(client, body(messages=[{"role": "user", "content": "x" * 5000}]))
        assert kind(await ask(client, body())) == "done"
        assert sidecar.nats is not None


# --- Callers that go away ----------------------------------------------------------------------


async def test_a_vanished_inbox_stops_the_request_and_serving_goes_on(
    served: Sidecar, nc: Client, fake: FakeOpenAIServer
) -> None:
    await fake.control.set_model("alpha-1", ModelBehaviour(answer_tokens=400, chunk_delay_s=0.02))
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(SUBJECT, body(stream=True, max_tokens=400), reply=inbox)
    first = await sub.next_msg(timeout=REPLY_TIMEOUT_S)
    request_id = decode(first)["id"].removeprefix("chatcmpl-")
    await sub.unsubscribe()
    # The sidecar learns from the server that nobody listens, and stops paying for the answer.
    events = await request_events_within(served, request_id, 15)
    end = events[-1].event
    assert isinstance(end, RequestFailed)
    assert end.error_type == "client_disconnected"
    assert 0 < end.chunks_delivered < 400
    await fake.control.reset()
    with anyio.fail_after(5):
        assert kind(await ask(nc, body())) == "done"


async def request_events_within(sidecar: Sidecar, request_id: str, timeout_s: float) -> Any:
    with anyio.fail_after(timeout_s):
        while True:
            stored = await sidecar.store.read_request(request_id)
            if stored and isinstance(stored[-1].event, (RequestCompleted, RequestFailed)):
                return stored
            await anyio.sleep(0.05)


async def test_a_request_without_a_reply_subject_is_not_served(
    served: Sidecar, nc: Client, fake: FakeOpenAIServer
) -> None:
    await nc.publish(SUBJECT, body())
    # Served in order: once a later request is answered, the first one was seen.
    assert kind(await ask(nc, body())) == "done"
    assert (await fake.control.stats()).requests == 1


# --- Several sidecars, outages -----------------------------------------------------------------


async def test_two_sidecars_in_one_queue_group_share_the_load(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer, nc: Client
) -> None:
    async with (
        nats_sidecar(short_dir / "a", fake, nats_server) as first,
        nats_sidecar(short_dir / "b", fake, nats_server) as second,
    ):
        replies: list[Msg] = []

        async def one() -> None:
            replies.append(await ask(nc, body()))

        async with anyio.create_task_group() as tasks:
            for _ in range(40):
                tasks.start_soon(one)
        assert [kind(r) for r in replies] == ["done"] * 40
        sidecars = (first, second)

        async def server_of(reply: Msg) -> int:
            """Which sidecar logged the request (its events are committed soon after)."""
            assert reply.headers is not None
            request_id = reply.headers["Tollgate-Request-Id"]
            with anyio.fail_after(REPLY_TIMEOUT_S):
                while True:
                    found = [
                        i for i, s in enumerate(sidecars) if await s.store.read_request(request_id)
                    ]
                    if found:
                        return found[0] if len(found) == 1 else -1
                    await anyio.sleep(0.01)

        served_by = [await server_of(reply) for reply in replies]
        # Each request was served by exactly one sidecar, and both served some.
        assert sorted(set(served_by)) == [0, 1]


async def test_nats_loss_leaves_the_socket_serving_and_nats_serving_resumes(
    served: Sidecar, nats_server: NatsServer
) -> None:
    async with caller(nats_server.url) as client:
        assert kind(await ask(client, body())) == "done"
    nats_server.stop()
    status, _ = await unix_post(served, body())
    assert status == 200
    nats_server.start()
    async with caller(nats_server.url) as client:
        with anyio.fail_after(REPLY_TIMEOUT_S):
            while True:
                try:
                    reply = await client.request(SUBJECT, body(), timeout=2)
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    await anyio.sleep(0.1)
                    continue
                break
        assert kind(reply) == "done"
    status, _ = await unix_post(served, body())
    assert status == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_start_up_without_nats_serves_the_socket_and_connects_later(
    short_dir: Path, fake: FakeOpenAIServer
) -> None:
    store = Path(tempfile.mkdtemp(prefix="tg-nats-"))
    server = NatsServer(store)
    server.port = free_port()
    try:
        async with nats_sidecar(short_dir, fake, server, wait_serving=False) as sidecar:
            assert sidecar.nats is not None
            assert not sidecar.nats.serving.is_set()
            status, _ = await unix_post(sidecar, body())
            assert status == 200
            server.start()
            with anyio.fail_after(REPLY_TIMEOUT_S):
                await sidecar.nats.serving.wait()
            async with caller(server.url) as client:
                assert kind(await ask(client, body())) == "done"
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


async def test_shutdown_lets_a_stream_in_flight_finish(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer, nc: Client
) -> None:
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=20, chunks=20, chunk_delay_s=0.05)
    )
    replies: list[Msg] = []
    started = anyio.Event()

    async def stream() -> None:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(SUBJECT, body(stream=True), reply=inbox)
        while not replies or kind(replies[-1]) == "delta":
            replies.append(await sub.next_msg(timeout=REPLY_TIMEOUT_S))
            started.set()

    async with anyio.create_task_group() as tasks, nats_sidecar(short_dir, fake, nats_server):
        tasks.start_soon(stream)
        await started.wait()
        # The sidecar has stopped: the stream it had begun was served to its end.
    assert kind(replies[-1]) == "done"
    text = "".join(decode(m)["choices"][0]["delta"].get("content", "") for m in replies[:-1])
    assert len(text.split()) == 20


async def test_with_the_event_log_on_jetstream_one_connection_serves_both(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer, nc: Client
) -> None:
    store = 'kind = "jetstream"\nstream = "TG_NATS_TEST"'
    async with nats_sidecar(short_dir, fake, nats_server, store_extra=store) as sidecar:
        reply = await ask(nc, body())
        assert reply.headers is not None
        request_id = reply.headers["Tollgate-Request-Id"]
        status, http = await unix_post(sidecar, body())
        assert status == 200
        for rid in (request_id, http["id"].removeprefix("chatcmpl-")):
            events = await request_events(sidecar, rid)
            assert isinstance(events[-1].event, RequestCompleted)
        js = nc.jetstream()
        info = await js.stream_info("TG_NATS_TEST")
        assert info.state.messages >= len(events)


async def test_shutdown_answers_a_request_past_the_grace_period_with_a_typed_error(
    short_dir: Path, fake: FakeOpenAIServer, nats_server: NatsServer, nc: Client
) -> None:
    await fake.control.set_model(
        "alpha-1", ModelBehaviour(answer_tokens=200, chunks=200, chunk_delay_s=0.05)
    )
    replies: list[Msg] = []
    started = anyio.Event()

    async def stream() -> None:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(SUBJECT, body(stream=True, max_tokens=200), reply=inbox)
        while not replies or kind(replies[-1]) == "delta":
            replies.append(await sub.next_msg(timeout=REPLY_TIMEOUT_S))
            started.set()

    grace = "shutdown_grace_s = 0.2"
    async with (
        anyio.create_task_group() as tasks,
        nats_sidecar(short_dir, fake, nats_server, server_extra=grace) as sidecar,
    ):
        tasks.start_soon(stream)
        await started.wait()
        request_id = decode(replies[0])["id"].removeprefix("chatcmpl-")
        store_path = sidecar.config.store.path
    error = decode(replies[-1])["error"]
    assert error["type"] == "cancelled"
    assert replies[-1].headers is not None
    assert replies[-1].headers["Tollgate-Status"] == "503"
    # The log has the request's end, written before the store closed.
    ends = [
        s.event
        for s in read_log(store_path)
        if s.event.request_id == request_id and isinstance(s.event, RequestFailed)
    ]
    assert [e.error_type for e in ends] == ["cancelled"]


async def test_with_the_log_on_jetstream_start_up_fails_clearly_without_nats(
    short_dir: Path, fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sidecar._nats_connect.STARTUP_WAIT_S", 1.0)
    server = NatsServer(short_dir)
    server.port = free_port()  # nothing listens there
    store = 'kind = "jetstream"'
    with pytest.raises(NatsUnreachableError, match=r"no NATS server answered within 1.0 s"):
        async with nats_sidecar(short_dir, fake, server, store_extra=store, wait_serving=False):
            pass
