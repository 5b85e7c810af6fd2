"""The JetStream event store on a three-node JetStream cluster with three replicas per stream:
the shared conformance suite again (the clustered server checks message ids and expected
sequences in another code path than a single server), then conditional holds and a leader
stepping down."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from jetstream_helpers import connect, reservation, stream_logs
from nats.aio.client import Client
from nats_server import NatsServer, free_ports
from store_conformance import NewLog, StoreConformance, assert_log, fallback

from events import HoldConflictError, open_jetstream_store


@contextlib.contextmanager
def three_node_cluster() -> Iterator[list[str]]:
    """Three nats-server processes with JetStream, routed to each other on loopback."""
    workdir = Path(tempfile.mkdtemp(prefix="tg-jsc-"))
    # A clustered server needs its peers' route ports before it starts.
    routes = free_ports(3)
    try:
        with contextlib.ExitStack() as stack:
            servers: list[NatsServer] = []
            for i, port in enumerate(routes):
                peers = ",".join(f"nats://127.0.0.1:{p}" for p in routes if p != port)
                name = ("--server_name", f"n{i}", "--cluster_name", "tollgate-test")
                route = ("--cluster", f"nats://127.0.0.1:{port}", "--routes", peers)
                server = NatsServer(workdir / f"n{i}", extra_args=(*name, *route))
                stack.callback(server.stop)
                # Ready without its peers: the JetStream meta group forms once all have started.
                server.start()
                servers.append(server)
            yield [server.url for server in servers]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    with three_node_cluster() as urls:
        yield urls


@pytest.fixture
async def nc(cluster: list[str]) -> AsyncIterator[Client]:
    client = await connect(cluster)
    try:
        # The meta leader may still be being elected: wait until streams can be created.
        with anyio.fail_after(30):
            while True:
                try:
                    await client.jetstream().account_info()
                    break
                except Exception:
                    await anyio.sleep(0.2)
        yield client
    finally:
        await client.close()


@pytest.fixture
def new_log(nc: Client) -> NewLog:
    return stream_logs(nc, replicas=3)


class TestJetStreamClusterConformance(StoreConformance):
    """The shared suite, each log a stream with three replicas."""


async def test_holds_and_reads_follow_a_new_leader(nc: Client) -> None:
    async with open_jetstream_store(nc, stream="LEADER", replicas=3) as store:
        events = [fallback() for _ in range(20)]
        await store.append(events[:10])
        assert await store.append_holds([reservation(request_id="r1")], after=0) == [11]
        # The stream's leader steps down; another replica takes over with everything acknowledged.
        response = await nc.request("$JS.API.STREAM.LEADER.STEPDOWN.LEADER", b"", timeout=5)
        assert b"success" in response.data
        with anyio.fail_after(30):
            seqs = await store.append(events[10:])
        assert seqs == list(range(12, 22))
        with pytest.raises(HoldConflictError):
            await store.append_holds([reservation(request_id="r2")], after=0)
        assert await store.append_holds([reservation(request_id="r3")], after=11) == [22]
        stored = await store.read()
        assert [s.event for s in stored if s.seq != 11 and s.seq != 22] == events
        assert_log(stored[:10], events[:10])
        info = await nc.jetstream().stream_info("LEADER")
        assert info.config.num_replicas == 3
