"""Request flows shaped like the executor's, for the projection tests: a hypothesis strategy and
a plain builder."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

from hypothesis import strategies as st

from events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CascadeEscalated,
    CostSettled,
    Event,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    StoredEvent,
    TaskUnrouted,
    TokenUsage,
)

T0 = int(datetime.datetime(2026, 11, 22, 23, tzinfo=datetime.UTC).timestamp()) * 10**9
MS = 10**6
MODELS = {"alpha": "primary", "beta": "backup", "gamma": "backup"}

_ids = itertools.count()


class Flow:
    """Builds one request's events; each method appends one or a few, like the executor."""

    def __init__(
        self, request_id: str, *, tenant: str = "acme", task: str = "chat", ts_ns: int = T0
    ) -> None:
        self.request_id, self.tenant, self.task = request_id, tenant, task
        self.now = ts_ns
        self.events: list[Event] = []
        self.attempt = 0

    def env(self, after_ms: int = 1) -> dict[str, Any]:
        self.now += after_ms * MS
        return {
            "event_id": f"ev-{next(_ids):08d}",
            "ts_ns": self.now,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "task": self.task,
            "config_hash": "h1",
        }

    def received(self, *, unrouted: bool = False, model_class: str = "main") -> Flow:
        self.events.append(
            RequestReceived(
                **self.env(0),
                transport="unix",
                model_requested="tollgate",
                stream=False,
                message_count=1,
                prompt_chars=10,
                prompt_sha256="0" * 64,
            )
        )
        if unrouted:
            self.events.append(
                TaskUnrouted(**self.env(0), requested_task=self.task, default_route="chat")
            )
        self.events.append(
            RouteDecided(
                **self.env(0),
                route="chat",
                model_class=model_class,
                selector="task",
                chain=list(MODELS),
                dropped=[],
                input_tokens_estimate=10,
                max_tokens=64,
            )
        )
        return self

    def reserve(self, model: str, amount: int = 1000) -> Flow:
        self.events.append(
            BudgetReserved(
                **self.env(),
                reservation_id=self.request_id,
                budgets=["all/-/2026-11-22"],
                amount_micros=amount,
                expires_at_ns=self.now + 60 * 10**9,
                model=model,
                provider=MODELS[model],
            )
        )
        return self

    def top_up(self, model: str, amount: int = 500) -> Flow:
        self.events.append(
            BudgetToppedUp(
                **self.env(),
                reservation_id=self.request_id,
                amount_micros=amount,
                model=model,
                provider=MODELS[model],
            )
        )
        return self

    def fail(self, model: str, error_class: str, *, then: str | None = None) -> Flow:
        """An attempt on ``model`` fails; ``then`` = "retry" or a model to fall back to."""
        self.attempt += 1
        provider = MODELS[model]
        self.events += [
            AttemptStarted(
                **self.env(),
                attempt=self.attempt,
                model=model,
                provider=provider,
                upstream_model=model,
            ),
            AttemptFailed(
                **self.env(30),
                attempt=self.attempt,
                model=model,
                provider=provider,
                error_class=error_class,
                status=503,
                provider_code=None,
                retry_after_ms=None,
                message="down",
                mid_stream=False,
                chunks_delivered=0,
                latency_ns=30 * MS,
            ),
        ]
        if then == "retry":
            self.events.append(
                RetryScheduled(
                    **self.env(),
                    attempt=self.attempt,
                    model=model,
                    provider=provider,
                    error_class=error_class,
                    wait_ms=10,
                )
            )
        elif then is not None:
            self.events.append(
                FallbackTaken(
                    **self.env(), from_model=model, to_model=then, error_class=error_class
                )
            )
        return self

    def escalate(self, model: str) -> Flow:
        self.events.append(
            CascadeEscalated(
                **self.env(), from_model=model, from_class="cheap", to_class="main", reason="empty"
            )
        )
        return self

    def succeed(self, model: str, *, tokens: tuple[int, int] = (10, 5), cost: int = 120) -> Flow:
        self.attempt += 1
        provider = MODELS[model]
        usage = TokenUsage(input_tokens=tokens[0], output_tokens=tokens[1], cached_input_tokens=2)
        self.events += [
            AttemptStarted(
                **self.env(),
                attempt=self.attempt,
                model=model,
                provider=provider,
                upstream_model=model,
            ),
            AttemptSucceeded(
                **self.env(200),
                attempt=self.attempt,
                model=model,
                provider=provider,
                status=200,
                latency_ns=200 * MS,
                ttft_ns=50 * MS,
                ttlt_ns=200 * MS,
                chunks=3,
                finish_reason="stop",
                usage=usage,
            ),
            CostSettled(
                **self.env(0),
                reservation_id=self.request_id,
                attempt=self.attempt,
                model=model,
                provider=provider,
                usage=usage,
                cost_micros=cost,
                final=True,
            ),
            RequestCompleted(
                **self.env(1),
                model=model,
                provider=provider,
                attempts=self.attempt,
                fallbacks=0,
                finish_reason="stop",
                usage=usage,
                latency_ns=210 * MS,
                ttft_ns=50 * MS,
                ttlt_ns=200 * MS,
                completion_chars=5,
                completion_sha256="0" * 64,
                cost_micros=cost,
            ),
        ]
        return self

    def settle(self, cost: int = 0, *, model: str = "alpha", final: bool = True) -> Flow:
        self.events.append(
            CostSettled(
                **self.env(0),
                reservation_id=self.request_id,
                attempt=max(self.attempt, 1),
                model=model,
                provider=MODELS[model],
                usage=TokenUsage(input_tokens=1),
                cost_micros=cost,
                final=final,
            )
        )
        return self

    def give_up(self, error_type: str = "all_candidates_failed", *, settle: bool = True) -> Flow:
        if settle:
            self.settle(0)
        self.events.append(
            RequestFailed(
                **self.env(1),
                error_type=error_type,
                message="no",
                attempts=self.attempt,
                latency_ns=100 * MS,
            )
        )
        return self

    def expire(self, counted: int = 1000) -> Flow:
        self.events.append(
            BudgetReservationExpired(
                **self.env(60_000), reservation_id=self.request_id, counted_micros=counted
            )
        )
        return self


@st.composite
def flows(draw: st.DrawFn, index: int) -> list[Event]:
    """One request's events: any mix of retries, fallbacks, cascades, failures and expiry."""
    flow = Flow(
        f"req-{index}",
        tenant=draw(st.sampled_from(["acme", "globex"])),
        task=draw(st.sampled_from(["chat", "code"])),
        ts_ns=T0 + draw(st.integers(0, 3 * 3_600_000)) * MS,  # crosses midnight UTC
    )
    flow.received(unrouted=draw(st.booleans()))
    models = draw(st.permutations(list(MODELS)))
    flow.reserve(models[0])
    fallbacks = draw(st.integers(0, 2))
    for i in range(fallbacks):
        if draw(st.booleans()):
            flow.fail(models[i], "overloaded", then="retry")
        if draw(st.booleans()):
            flow.escalate(models[i])
        flow.fail(models[i], draw(st.sampled_from(["server_error", "timeout"])), then=models[i + 1])
        flow.top_up(models[i + 1])
    ending = draw(st.sampled_from(["served", "failed", "crashed", "late"]))
    last = models[fallbacks]
    if ending == "served":
        flow.succeed(last, tokens=(draw(st.integers(0, 500)), draw(st.integers(0, 500))))
    elif ending == "failed":
        flow.give_up()
    elif ending == "crashed":
        flow.expire(draw(st.integers(0, 2000)))  # the sidecar died: no terminal event
    else:
        # Expired while the call was slow, then settled late (an overrun is possible).
        # Each settlement is another attempt's: an attempt settles once.
        flow.expire(draw(st.integers(0, 2000)))
        flow.attempt += 1
        flow.settle(draw(st.integers(0, 3000)), model=last, final=False)
        flow.attempt += 1
        flow.settle(draw(st.integers(0, 3000)), model=last)
    return flow.events


@st.composite
def logs(draw: st.DrawFn, max_requests: int = 12) -> list[StoredEvent]:
    """Several requests' flows, interleaved as concurrent requests are, as a stored log."""
    queues = [draw(flows(i)) for i in range(draw(st.integers(1, max_requests)))]
    merged: list[Event] = []
    while queues:
        queue = queues[draw(st.integers(0, len(queues) - 1))]
        merged.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return [StoredEvent(seq, e) for seq, e in enumerate(merged, 1)]
