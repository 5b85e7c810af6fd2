"""The ``tollgate`` command."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import anyio

from projections import BudgetBook

from ._admin import budget_report
from ._boundary import budget_specs
from ._cli_observe import add_observe_commands, read_events, run_observe_command
from ._config import Config, ConfigError, load_config
from ._demo import run_demo
from ._evals import add_eval_parser, run_eval
from ._fakes import serve_all_fakes
from ._nats_connect import NatsConnectError
from ._service import open_sidecar
from ._table import print_table

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

    budget = commands.add_parser(
        "budget", help="show each budget's limit, reserved, spent and remaining"
    )
    budget.add_argument("--config", "-c", required=True, help="the TOML config file")
    budget.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add_observe_commands(commands)
    add_eval_parser(commands)

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
        if args.command in ("usage", "audit", "replay", "tail"):
            return run_observe_command(args, load_config(args.config))
        if args.command == "eval":
            return run_eval(args)
        if args.command == "budget":
            budget_config = load_config(args.config)
            return _run(lambda: _budget(budget_config, as_json=args.json))
        return _run(run_demo)
    except ConfigError as exc:
        print(f"tollgate: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except NatsConnectError as exc:
        print(f"tollgate: {exc}", file=sys.stderr)
        return 1


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


async def _budget(config: Config, *, as_json: bool) -> int:
    """From the running sidecar if there is one (it knows the holds in flight), else from the
    log file, folded read-only."""
    try:
        connector = aiohttp.UnixConnector(path=config.server.socket)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get("http://tollgate/admin/budgets") as response,
        ):
            report = await response.json()
        source = f"the running sidecar (unix:{config.server.socket})"
    except (aiohttp.ClientError, OSError):
        book = BudgetBook(budget_specs(config))
        # In a thread: reading a JetStream stream runs an event loop of its own.
        for stored in await anyio.to_thread.run_sync(lambda: list(read_events(config))):
            book.apply(stored.event)
        report = budget_report(book)
        source = (
            f"the log {config.store.path}"
            if config.store.kind == "sqlite"
            else f"the JetStream stream {config.store.stream}"
        )
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    header = ("budget", "limit $", "reserved $", "spent $", "remaining $")
    rows = [
        (
            b["budget"],
            "-" if b["limit_usd"] is None else f"{b['limit_usd']:.6f}",
            f"{b['reserved_usd']:.6f}",
            f"{b['spent_usd']:.6f}",
            "-" if b["remaining_usd"] is None else f"{b['remaining_usd']:.6f}",
        )
        for b in report["budgets"]
    ]
    print_table(header, rows, sys.stdout)
    if not rows:
        print("(no budget has been used yet)")
    print(f"\nFrom {source}.")
    return 0
