"""The admin API, on the sidecar's socket: budget state, and budget limits changed at run time.

``GET /admin/budgets`` answers every budget key's limit, reserved, spent and remaining (in USD and
micro-dollars). ``POST /admin/budgets/limit`` with ``{"budget": NAME or KEY, "limit_usd": X}``
changes a limit: the change is an event in the log (``BudgetLimitChanged``), durable before the
answer, so a restart or a replay keeps it.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from events import BudgetLimitChanged, EventStore, StoreError, new_id
from projections import (
    BudgetBook,
    ProjectionRunner,
    UsageFilter,
    audit_timeline,
)

from ._boundary import CostBoundary
from ._config import Config
from ._errors import TollgateError, error_body
from ._observe import metrics_text, parse_usage_dims, usage_report

__all__ = ["add_admin_routes", "add_observability_routes", "budget_report"]


class _LimitChange(msgspec.Struct, forbid_unknown_fields=True):
    budget: str
    limit_usd: float


def budget_report(book: BudgetBook) -> dict[str, Any]:
    snapshot = book.snapshot()
    return {
        "budgets": [
            {
                "budget": b.key,
                "limit_usd": None if b.limit_micros is None else b.limit_micros / 1e6,
                "reserved_usd": b.reserved_micros / 1e6,
                "spent_usd": b.spent_micros / 1e6,
                "remaining_usd": None if b.remaining_micros is None else b.remaining_micros / 1e6,
                "limit_micros": b.limit_micros,
                "reserved_micros": b.reserved_micros,
                "spent_micros": b.spent_micros,
            }
            for b in snapshot.budgets
        ],
        "open_reservations": len(snapshot.reservations),
    }


def add_admin_routes(
    app: web.Application, boundary: CostBoundary, store: EventStore, config_hash: str
) -> None:
    async def budgets(request: web.Request) -> web.Response:
        return web.json_response(budget_report(boundary.book))

    async def change_limit(request: web.Request) -> web.Response:
        try:
            change = msgspec.json.decode(await request.read(), type=_LimitChange)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _bad(f"expected {{'budget': str, 'limit_usd': number}}: {exc}")
        name = change.budget.split("/", 1)[0]
        if name not in boundary.book.budget_names() or change.limit_usd < 0:
            return _bad(f"no budget {name!r} in the config, or a negative limit")
        event = BudgetLimitChanged(
            event_id=new_id(),
            ts_ns=time.time_ns(),
            request_id="",
            tenant="",
            task="",
            config_hash=config_hash,
            budget=change.budget,
            limit_micros=round(change.limit_usd * 1_000_000),
        )
        # Durable first: an acknowledged change must survive a crash.
        await store.append([event])
        boundary.book.apply(event)
        return web.json_response(budget_report(boundary.book))

    app.router.add_get("/admin/budgets", budgets)
    app.router.add_post("/admin/budgets/limit", change_limit)


def add_observability_routes(
    app: web.Application,
    config: Config,
    runner: ProjectionRunner,
    store: EventStore,
    *,
    probes_only: bool = False,
) -> None:
    """Health, readiness, metrics, usage, audit timelines and alerts (all read-only).

    Every listener gets the real health check, so a probe on the socket and one on TCP agree.

    ``probes_only``: health, readiness and metrics alone — for the TCP listener, which may face
    probes and scrapers: nothing there spends money or shows a tenant's requests.
    """

    async def healthz(request: web.Request) -> web.Response:
        # Alive means able to log: a sidecar whose store has failed can serve nothing, and a
        # restart (which replays the log) is the way back.
        try:
            store.check_writable()
        except StoreError as exc:
            return web.json_response({"status": "failed", "reason": str(exc)}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        try:
            store.check_writable()
            log_position = await store.last_seq()
        except StoreError as exc:
            return web.json_response({"ready": False, "reason": str(exc)}, status=503)
        return web.json_response(
            {"ready": True, "log_position": log_position, "projection_position": runner.position}
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            text=metrics_text(config, runner),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    async def usage(request: web.Request) -> web.Response:
        query = request.query
        try:
            by = parse_usage_dims(query.get("by"))
        except ValueError as exc:
            return _bad(f"'by': {exc}", code="invalid_query")
        where = UsageFilter(
            tenant=query.get("tenant"),
            task=query.get("task"),
            model=query.get("model"),
            provider=query.get("provider"),
            model_class=query.get("class"),
            since=query.get("since"),
            until=query.get("until"),
        )
        report = usage_report(runner.projections.usage, where, by)
        return web.json_response({**report, "position": runner.position})

    async def audit(request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        timeline = audit_timeline(await store.read_request(request_id))
        if timeline is None:
            error = TollgateError("not_found", f"no events for request {request_id!r}", status=404)
            return web.Response(status=404, body=error_body(error), content_type="application/json")
        return web.Response(body=msgspec.json.encode(timeline), content_type="application/json")

    async def alerts(request: web.Request) -> web.Response:
        active = runner.projections.alerts.active()
        return web.Response(
            body=msgspec.json.encode({"alerts": active, "position": runner.position}),
            content_type="application/json",
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if not probes_only:
        app.router.add_get("/admin/usage", usage)
        app.router.add_get("/admin/audit/{request_id}", audit)
        app.router.add_get("/admin/alerts", alerts)


def _bad(message: str, code: str = "invalid_budget_change") -> web.Response:
    error = TollgateError.invalid_request(message, code=code)
    return web.Response(status=400, body=error_body(error), content_type="application/json")
