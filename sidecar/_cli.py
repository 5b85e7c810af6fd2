"""The ``tollgate`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import anyio

from ._config import Config, ConfigError, load_config
from ._demo import run_demo
from ._fakes import serve_all_fakes
from ._service import open_sidecar

__all__ = ["main"]

log = logging.getLogger("tollgate")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", "-c", required=True, help="the TOML config file")

    fakes = commands.add_parser(
        "fakes", help="run a fake server for each provider protocol, each on a free port"
    )
    fakes.add_argument("--host", default="127.0.0.1")

    commands.add_parser(
        "demo", help="run fakes and a sidecar in a temporary directory and send a mixed workload"
    )

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            config = load_config(args.config)
            return _run(lambda: _serve(config))
        if args.command == "fakes":
            return _run(lambda: _fakes(args.host))
        return _run(run_demo)
    except ConfigError as exc:
        print(f"tollgate: invalid configuration: {exc}", file=sys.stderr)
        return 2


def _run(entry: Callable[[], Awaitable[int]]) -> int:
    try:
        return anyio.run(entry, backend="asyncio", backend_options={"use_uvloop": True})
    except KeyboardInterrupt:
        return 130


async def _until_signalled() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def _serve(config: Config) -> int:
    async with open_sidecar(config) as sidecar:
        log.info(
            "serving on unix:%s (config %s, log %s)",
            sidecar.socket_path,
            sidecar.config_hash,
            config.store.path,
        )
        await _until_signalled()
    return 0


async def _fakes(host: str) -> int:
    async with serve_all_fakes(host) as fakes:
        # One line per protocol: its name, then the base URL its clients take.
        for name, fake in fakes.items():
            print(f"{name:<10} {fake.base_url}", flush=True)
        await _until_signalled()
    return 0
