"""The JetStream event store on a three-node JetStream cluster with three replicas per stream:
the shared conformance suite again (the clustered server checks message ids and expected
sequences in another code path than a single server), then conditional holds and a leader
stepping down."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats_server import find_nats_server
from store_conformance import NewLog, StoreConformance, StoreOpener, assert_log, fallback
from test_jetstream_store import reservation

from events import EventStore, HoldConflictError, open_jetstream_store

_CLIENT = re.compile(rb"Listening for client connections on [\d.]+:(\d+)")
_names = itertools.count()


class _Node:
    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.log = bytearray()
        self.port = -1
        self.reader: threading.Thread | None = None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def three_node_cluster() -> Iterator[list[str]]:
    """Three nats-server processes with JetStream, routed to each other on loopback."""
    workdir = Path(tempfile.mkdtemp(prefix="tg-jsc-"))
    routes = _free_ports(3)
    nodes: list[_Node] = []
    try:
        for i in range(3):
            args = [
                find_nats_server(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                "-1",
                "-sd",
                str(workdir / f"n{i}"),
                "--server_name",
                f"n{i}",
                "--cluster_name",
                "tollgate-test",
                "--cluster",
                f"nats://127.0.0.1:{routes[i]}",
                "--routes",
                ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i),
            ]
            node = _Node(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            nodes.append(node)

            def read(node: _Node = node) -> None:
                assert node.process.stderr is not None
                for line in node.process.stderr:
                    node.log += line
                    if match := _CLIENT.search(line):
                        node.port = int(match.group(1))

            node.reader = threading.Thread(target=read, daemon=True)
            node.reader.start()
        deadline = time.monotonic() + 20
        while any(n.port < 0 for n in nodes) or not all(
            b"JetStream cluster" in n.log or b"Server is ready" in n.log for n in nodes
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not start")
            time.sleep(0.05)
        yield [f"nats://127.0.0.1:{n.port}" for n in nodes]
    finally:
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.reader is not None:
                node.reader.join(5)
            assert node.process.stderr is not None
            node.process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    with three_node_cluster() as urls:
        yield urls


async def _connect(urls: list[str]) -> Client:
    return await nats.connect(servers=urls, max_reconnect_attempts=-1, reconnect_time_wait=0.05)


@pytest.fixture
async def nc(cluster: list[str]) -> AsyncIterator[Client]:
    client = await _connect(cluster)
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
    def new() -> StoreOpener:
        n = next(_names)
        stream, prefix = f"CLUSTER{n}", f"cluster{n}.ev"

        def opener(**options: Any) -> AbstractAsyncContextManager[EventStore]:
            return open_jetstream_store(
                nc, stream=stream, subject_prefix=prefix, replicas=3, **options
            )

        return opener

    return new


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
