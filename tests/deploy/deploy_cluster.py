"""Run a deploy/ NATS cluster configuration for real, on loopback.

Each node runs nats-server on its own configuration from deploy/, with only what ties it to a
host swapped out: listen addresses become loopback ports, the JetStream store and pid file move
to a temporary directory, and the routes point at the three nodes' loopback route ports.
Everything else (cluster name, JetStream limits, authorization, payload limits, server names)
is what an operator would deploy.
"""

from __future__ import annotations

import contextlib
import copy
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_parsers import render_nats_conf
from nats_server import find_nats_server, free_ports

__all__ = ["ClusterNode", "running_cluster"]

_CLIENT = re.compile(rb"Listening for client connections on [\d.]+:(\d+)")
_MONITOR = re.compile(rb"Starting http monitor on [\d.]+:(\d+)")
_ROUTE = re.compile(rb"Listening for route connections on [\d.]+:(\d+)")
_READY = b"Server is ready"


@dataclass
class ClusterNode:
    process: subprocess.Popen[bytes]
    log: bytearray = field(default_factory=bytearray)
    client_port: int = -1
    monitor_port: int = -1
    route_port: int = -1

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"


def _localize(
    conf: dict[str, Any], node_dir: Path, route_port: int, routes: list[str]
) -> dict[str, Any]:
    local = copy.deepcopy(conf)
    local["listen"] = "127.0.0.1:-1"
    local["http"] = "127.0.0.1:-1"
    if "pid_file" in local:
        local["pid_file"] = str(node_dir / "nats.pid")
    local["jetstream"]["store_dir"] = str(node_dir / "jetstream")
    local["cluster"]["listen"] = f"127.0.0.1:{route_port}"
    # Only the addresses change: the routes keep the credentials they are configured with
    # (nats-route://user:password@host:port). Routes given as $VARIABLES: resolve them first.
    configured = [str(r) for r in conf["cluster"]["routes"]]
    logins = {r.partition("://")[2].rpartition("@")[0] for r in configured}
    if len(logins) != 1 or not all("://" in r for r in configured):
        raise ValueError(f"cannot localize the routes {configured}")
    prefix = f"{logins.pop()}@" if "@" in configured[0] else ""
    local["cluster"]["routes"] = [r.replace("://", f"://{prefix}", 1) for r in routes]
    return local


def _start(config_file: Path, timeout_s: float = 15.0) -> ClusterNode:
    process = subprocess.Popen(
        [find_nats_server(), "-c", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = ClusterNode(process)
    ready = threading.Event()
    patterns = (_CLIENT, "client_port"), (_MONITOR, "monitor_port"), (_ROUTE, "route_port")

    def read_log() -> None:
        # Drains stderr for the server's whole life so it never blocks on a full pipe.
        assert process.stderr is not None
        server_ready = False
        for line in process.stderr:
            node.log += line
            for pattern, attr in patterns:
                if match := pattern.search(line):
                    setattr(node, attr, int(match.group(1)))
            server_ready = server_ready or _READY in line
            # The route listener may start after "Server is ready": wait for both.
            if server_ready and min(node.client_port, node.monitor_port, node.route_port) > 0:
                ready.set()

    threading.Thread(target=read_log, daemon=True).start()
    if not ready.wait(timeout_s):
        _stop(node)
        raise RuntimeError(f"nats-server did not start:\n{node.log.decode(errors='replace')}")
    return node


def _stop(node: ClusterNode) -> None:
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(10)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    assert node.process.stderr is not None
    node.process.stderr.close()


@contextlib.contextmanager
def running_cluster(
    confs: list[dict[str, Any]], envs: list[dict[str, str]], workdir: Path
) -> Iterator[list[ClusterNode]]:
    """Start one node per configuration (``envs[i]`` resolves node i's ``$VARIABLES``)."""
    nodes: list[ClusterNode] = []
    # A clustered JetStream server needs its routes before it starts, so the route ports are
    # chosen up front (free now; a collision with another process would fail the start loudly).
    route_ports = free_ports(len(confs))
    try:
        for index, (conf, env) in enumerate(zip(confs, envs, strict=True)):
            node_dir = workdir / f"node-{index}"
            node_dir.mkdir()
            routes = [f"nats-route://127.0.0.1:{port}" for port in route_ports]
            config_file = node_dir / "nats.json"
            config_file.write_text(
                render_nats_conf(_localize(conf, node_dir, route_ports[index], routes), env)
            )
            nodes.append(_start(config_file))
        yield nodes
    finally:
        for node in nodes:
            _stop(node)
