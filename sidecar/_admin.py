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

from events import BudgetLimitChanged, EventStore, new_id
from projections import BudgetBook

from ._boundary import CostBoundary
from ._errors import TollgateError, error_body

__all__ = ["add_admin_routes", "budget_report"]


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


def _bad(message: str) -> web.Response:
    error = TollgateError.invalid_request(message, code="invalid_budget_change")
    return web.Response(status=400, body=error_body(error), content_type="application/json")
