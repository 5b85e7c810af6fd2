"""The executor: one request's life from routing to its terminal event.

It routes, dispatches to the chain's candidates in order, forwards the chunks to the transport's
sink, and appends every step to the log. Invariants enforced here:

* every request that reaches :meth:`Executor.execute` ends with exactly one terminal event,
  ``RequestCompleted`` or ``RequestFailed``, whatever happens (errors, deadline, disconnect);
* a request commits to a candidate when its first content chunk is forwarded: before that any
  failure may fall back; after it, a failure ends the stream with a typed error;
* a provider's ``bad_request`` or ``content_filtered`` is never retried elsewhere: the same
  payload would fail again, at a cost.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import anyio
import msgspec

from adapters import (
    Adapter,
    ChatRequest,
    ErrorClass,
    Finish,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageReport,
)
from events import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    CandidateSkipped,
    CascadeEscalated,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    DroppedCandidate,
    Event,
    EventStore,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    TaskMistyped,
    TaskUnrouted,
    new_id,
)

from ._api import ChatCompletionRequest
from ._boundary import BudgetExceededError, CostBoundary, Tab, token_usage
from ._breaker import Breaker, BreakerState, Transition
from ._cascade import HeldAnswer, cascade_check
from ._config import Config
from ._errors import TollgateError
from ._estimate import measure_prompt
from ._infer import Inference, looks_mistyped, route_query
from ._retry import Action, decide
from ._router import Candidate, RouteDecision, UnknownTargetError, route

__all__ = ["Call", "ClientDisconnectedError", "Executor", "Outcome", "ResponseSink", "Served"]

log = logging.getLogger("tollgate.executor")


class ClientDisconnectedError(Exception):
    """The client went away; raised by a sink when it can no longer deliver."""


class Served(msgspec.Struct, frozen=True):
    """Who is answering: known when the first chunk is about to be forwarded."""

    request_id: str
    model: str
    provider: str
    route: str
    model_class: str


class ResponseSink(Protocol):
    """Where a transport receives the answer as it is produced."""

    async def begin(self, served: Served) -> None:
        """Called once, before the first content chunk (or at the end, for an empty answer)."""
        ...

    async def send(self, chunks: Sequence[TextDelta | ToolCallDelta]) -> None:
        """Forward content chunks (those of one upstream read, together).

        Raises :class:`ClientDisconnectedError` if the client can no longer take them.
        """
        ...


class Call(msgspec.Struct, frozen=True, kw_only=True):
    """An admitted request, decoded by a transport."""

    request: ChatCompletionRequest
    params: dict[str, Any]
    tenant: str
    task: str | None
    transport: str
    request_id: str = msgspec.field(default_factory=new_id)
    # Monotonic nanoseconds when the transport received it; durations are measured from here.
    received_ns: int = msgspec.field(default_factory=time.perf_counter_ns)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    served: Served
    # What the request's attempts cost, in micro-dollars.
    cost_micros: int
    finish_reason: str
    usage: Usage
    attempts: int
    fallbacks: int
    ttft_ns: int | None
    latency_ns: int


class _Progress:
    """What one attempt has produced so far."""

    __slots__ = (
        "chars",
        "chunks",
        "finish",
        "first_ns",
        "hasher",
        "text",
        "usage",
        "usage_reported",
    )

    def __init__(self, keep_text: bool) -> None:
        self.chunks = 0
        self.chars = 0
        self.first_ns: int | None = None
        self.finish: Finish | None = None
        self.usage = Usage()
        # Whether the provider reported usage; without it the cost is unknown.
        self.usage_reported = False
        self.hasher = hashlib.sha256()
        self.text: list[str] | None = [] if keep_text else None


class _Stamp:
    """The envelope shared by one request's events."""

    __slots__ = ("config_hash", "received_ns", "request_id", "task", "tenant")

    def __init__(self, call: Call, config_hash: str) -> None:
        self.request_id = call.request_id
        self.tenant = call.tenant
        self.task = call.task or ""
        self.config_hash = config_hash
        self.received_ns = call.received_ns

    def envelope(self) -> dict[str, Any]:
        return {
            "event_id": new_id(),
            "ts_ns": time.time_ns(),
            "request_id": self.request_id,
            "tenant": self.tenant,
            "task": self.task,
            "config_hash": self.config_hash,
        }


class Executor:
    def __init__(
        self,
        config: Config,
        config_hash: str,
        adapters: Mapping[str, Adapter],
        store: EventStore,
        boundary: CostBoundary,
    ) -> None:
        self._config = config
        self._boundary = boundary
        self._config_hash = config_hash
        self._adapters = adapters
        self._store = store
        self._log_content = config.server.log_content
        self._breakers = {name: Breaker(name, config.breaker) for name in config.providers}
        self._random = random.Random()

    async def execute(self, call: Call, sink: ResponseSink) -> Outcome:
        """Serve ``call`` through ``sink``; raise :class:`TollgateError` if it can't be served.

        Events are gathered in ``pending`` and handed to the log in as few batches as the
        request's phases allow: before each upstream call, and at the end.
        """
        stamp = _Stamp(call, self._config_hash)
        request = call.request
        size = measure_prompt(request.messages, request.tools, request.response_format)
        prompt_json = msgspec.json.encode(request.messages)
        pending: list[Event] = [
            RequestReceived(
                **stamp.envelope(),
                transport=call.transport,
                model_requested=request.model,
                stream=request.stream,
                message_count=len(request.messages),
                prompt_chars=size.chars,
                prompt_sha256=hashlib.sha256(prompt_json).hexdigest(),
                max_tokens=request.output_limit,
                prompt=prompt_json.decode() if self._log_content else None,
            )
        ]
        query, inference = route_query(request, call.task, size.estimated_tokens)
        now = time.monotonic()
        unavailable = [p for p, b in self._breakers.items() if not b.available(now)]
        try:
            decision = route(query, self._config, unavailable)
        except UnknownTargetError as exc:
            error = TollgateError.invalid_request(
                f"{exc}; name a model, 'class:<class>' or 'task:<task>' from the config",
                code=f"{exc.kind}_not_found",
                param="model",
                status=404,
            )
            await self._fail(stamp, pending, error, attempts=0)
            raise error from None
        pending += _decision_events(stamp, decision, size.estimated_tokens, inference)
        if not decision.chain:
            error = _no_route(decision)
            await self._fail(stamp, pending, error, attempts=0)
            raise error

        tab = self._boundary.open_tab(
            request_id=call.request_id,
            tenant=call.tenant,
            route=decision.route,
            model_class=decision.model_class,
        )
        d = _Dispatch(stamp, decision, call, sink, pending, tab, size.estimated_tokens)
        route_config = decision.route_config
        d.deadline = time.monotonic() + route_config.deadline_s
        success: _Success | None = None
        try:
            with anyio.move_on_after(route_config.deadline_s) as scope:
                success = await self._serve(d)
        except anyio.get_cancelled_exc_class():
            # Not the deadline (that is caught by the scope): the sidecar is shutting down.
            shutdown = TollgateError("cancelled", "the sidecar is shutting down", status=503)
            await self._fail(stamp, pending, shutdown, attempts=d.attempts, tab=tab)
            raise
        if success is not None:
            return await self._complete(d, success)
        if scope.cancelled_caught:
            error = TollgateError(
                "deadline_exceeded",
                f"no answer within the route's deadline of {route_config.deadline_s} s",
                status=504,
                details={"attempts": d.failures},
            )
        elif not d.attempts:
            error = TollgateError(
                "no_route",
                f"every candidate of route {decision.route!r} is unavailable "
                f"({', '.join(d.skipped)})",
                status=503,
                details={"skipped": d.skipped},
            )
        else:
            error = _all_failed(d.failures)
        await self._fail(stamp, pending, error, attempts=d.attempts, chunks=d.delivered, tab=tab)
        raise error

    async def _serve(self, d: _Dispatch) -> _Success | None:
        """Dispatch the chain; on a cascade route, the cheap class first, checked."""
        decision = d.decision
        if not decision.cascade:
            return await self._dispatch(d, decision.chain)
        held = d.holding = HeldAnswer()
        real_sink, d.sink = d.sink, held
        success = await self._dispatch(d, decision.cascade)
        d.sink, d.holding = real_sink, None
        reason = (
            "failed"
            if success is None
            else cascade_check(d.call.request, held, success.finish_reason)
        )
        if success is not None and reason is None:
            try:
                await held.replay(real_sink)
            except ClientDisconnectedError:
                gone = TollgateError("client_disconnected", "the client went away", status=499)
                await self._fail(d.stamp, d.pending, gone, attempts=d.attempts, tab=d.tab)
                raise
            success.first_ns = time.perf_counter_ns()
            return success
        d.pending.append(
            CascadeEscalated(
                **d.stamp.envelope(),
                from_model=success.candidate.model if success else "",
                from_class=decision.route_config.cascade_from or "",
                to_class=decision.model_class,
                reason=reason or "failed",
            )
        )
        return await self._dispatch(d, decision.chain)

    async def _complete(self, d: _Dispatch, success: _Success) -> Outcome:
        """The request's terminal event for an answer that was delivered."""
        progress = success.progress
        candidate = success.candidate
        end_ns = time.perf_counter_ns()
        received_ns = d.call.received_ns
        ttft = None if success.first_ns is None else success.first_ns - received_ns
        d.pending += self._boundary.close(d.tab, d.stamp.envelope)
        d.pending.append(
            RequestCompleted(
                **d.stamp.envelope(),
                model=candidate.model,
                provider=candidate.provider,
                attempts=d.attempts,
                fallbacks=d.fallbacks,
                finish_reason=success.finish_reason,
                usage=success.usage,
                latency_ns=end_ns - received_ns,
                ttft_ns=ttft,
                ttlt_ns=end_ns - received_ns,
                completion_chars=progress.chars,
                completion_sha256=progress.hasher.hexdigest(),
                completion="".join(progress.text) if progress.text is not None else None,
                cost_micros=d.tab.cost_micros,
            )
        )
        await self._store.submit(d.pending)
        d.pending.clear()
        return Outcome(
            cost_micros=d.tab.cost_micros,
            served=success.served,
            finish_reason=success.finish_reason,
            usage=progress.usage,
            attempts=d.attempts,
            fallbacks=d.fallbacks,
            ttft_ns=ttft,
            latency_ns=end_ns - received_ns,
        )

    async def _dispatch(self, d: _Dispatch, chain: Sequence[Candidate]) -> _Success | None:
        """Try the chain's candidates in order, with retries, until one serves.

        Returns None when every candidate failed. The caller's scope bounds it by the deadline.
        """
        route_config = d.decision.route_config
        max_wait = (
            route_config.max_retry_wait_s
            if route_config.max_retry_wait_s is not None
            else self._config.retry.max_wait_s
        )
        previous: tuple[Candidate, str] | None = None
        for candidate in chain:
            skip = (
                "provider_failed"
                if candidate.provider in d.failed_providers
                else "smaller_context"
                if candidate.context_window <= d.overflowed_window
                else None
            )
            retries = 0
            while skip is None:
                breaker = self._breakers[candidate.provider]
                admitted, transition = breaker.admit(time.monotonic())
                self._note_breaker(d, transition)
                if not admitted:
                    skip = "breaker_open"
                    break
                if previous is not None and previous[0] is not candidate:
                    d.fallbacks += 1
                    d.pending.append(
                        FallbackTaken(
                            **d.stamp.envelope(),
                            from_model=previous[0].model,
                            to_model=candidate.model,
                            error_class=previous[1],
                        )
                    )
                result = await self._attempt(d, candidate, breaker)
                if isinstance(result, _Success):
                    return result
                previous = (candidate, result.error_class.value)
                step = decide(
                    result.error_class.value,
                    quota=result.quota,
                    retries_done=retries,
                    retry_after_s=result.retry_after_s,
                    policy=self._config.retry,
                    max_wait_s=max_wait,
                    remaining_s=d.deadline - time.monotonic(),
                    draw=self._random.random(),
                )
                if step.action is Action.STOP:
                    error = _rejected(candidate, result, d.failures)
                    await self._fail(d.stamp, d.pending, error, attempts=d.attempts, tab=d.tab)
                    raise error
                if step.action is not Action.RETRY:
                    if step.action is Action.SKIP_PROVIDER:
                        d.failed_providers.add(candidate.provider)
                    elif step.action is Action.FALLBACK_LARGER:
                        d.overflowed_window = max(d.overflowed_window, candidate.context_window)
                    break
                retries += 1
                d.pending.append(
                    RetryScheduled(
                        **d.stamp.envelope(),
                        attempt=d.attempts,
                        model=candidate.model,
                        provider=candidate.provider,
                        error_class=result.error_class.value,
                        wait_ms=round(step.wait_s * 1000),
                    )
                )
                await anyio.sleep(step.wait_s)
            if skip is not None:
                d.skipped.append(f"{candidate.model}: {skip}")
                d.pending.append(
                    CandidateSkipped(
                        **d.stamp.envelope(),
                        model=candidate.model,
                        provider=candidate.provider,
                        reason=skip,
                    )
                )
        return None

    async def _attempt(
        self, d: _Dispatch, candidate: Candidate, breaker: Breaker
    ) -> _Success | ProviderError:
        """One try on one candidate: the outcome, or the provider's error for the caller to
        weigh. Raises :class:`TollgateError` when the request must end here (the answer was
        already being forwarded)."""
        stamp = d.stamp
        try:
            held, durable = await self._boundary.hold(
                d.tab,
                stamp.envelope,
                d.pending,
                model=candidate.model,
                provider=candidate.provider,
                input_tokens=d.input_tokens,
                max_tokens=candidate.max_tokens,
                deadline_s=d.decision.route_config.deadline_s,
            )
        except BudgetExceededError as exc:
            # Refused before any call: the provider is never reached.
            breaker.release()
            d.pending += exc.events
            await self._fail(stamp, d.pending, exc, attempts=d.attempts, tab=d.tab)
            raise
        d.pending += held
        d.attempts += 1
        number = d.attempts
        served = Served(
            request_id=d.call.request_id,
            model=candidate.model,
            provider=candidate.provider,
            route=d.decision.route,
            model_class=candidate.model_class,
        )
        d.pending.append(
            AttemptStarted(
                **stamp.envelope(),
                attempt=number,
                model=candidate.model,
                provider=candidate.provider,
                upstream_model=candidate.upstream_model,
            )
        )
        if durable:
            # The reservation is durable before the provider is called (the budget invariant
            # must survive a crash during the call).
            await self._store.append(d.pending)
        else:
            await self._store.submit(d.pending)
        d.pending.clear()
        progress = _Progress(keep_text=self._log_content)
        if d.holding is not None:
            # Only the answer that ends up accepted may be replayed.
            d.holding.clear()
        started_ns = time.perf_counter_ns()
        upstream = ChatRequest(
            model=candidate.upstream_model,
            messages=d.call.request.messages,
            max_tokens=candidate.max_tokens,
            stream=d.call.request.stream,
            params=d.call.params,
        )
        try:
            await self._relay(upstream, candidate, served, d, progress)
        except ProviderError as exc:
            self._settle(d, candidate, number, progress, answered=exc.after_response)
            self._note_breaker(d, breaker.record(time.monotonic(), exc.error_class.value))
            d.failures.append(_failure(candidate, exc.error_class.value, exc.status))
            d.pending.append(
                _attempt_failed(
                    stamp,
                    candidate,
                    number,
                    exc.error_class.value,
                    progress,
                    started_ns,
                    message=exc.message,
                    status=exc.status,
                    code=exc.provider_code,
                    retry_after_s=exc.retry_after_s,
                )
            )
            if not progress.chunks or d.holding is not None:
                return exc
            # Already committed to this answer: the stream ends here, typed.
            d.delivered = progress.chunks
            error = TollgateError(
                "upstream_stream_broken",
                f"{candidate.provider} failed after {progress.chunks} chunks were delivered "
                f"({exc.error_class.value}): {exc.message}",
                status=502,
                code=exc.error_class.value,
                details={"chunks_delivered": progress.chunks, "model": candidate.model},
            )
            await self._fail(
                stamp, d.pending, error, attempts=number, chunks=progress.chunks, tab=d.tab
            )
            raise error from None
        except ClientDisconnectedError:
            self._settle(d, candidate, number, progress, answered=True)
            breaker.release()
            d.pending.append(
                _attempt_failed(
                    stamp,
                    candidate,
                    number,
                    "client_disconnected",
                    progress,
                    started_ns,
                    message="the client disconnected",
                )
            )
            gone = TollgateError("client_disconnected", "the client went away", status=499)
            await self._fail(
                stamp, d.pending, gone, attempts=number, chunks=progress.chunks, tab=d.tab
            )
            raise
        except anyio.get_cancelled_exc_class():
            # The request's deadline (or shutdown) cut the attempt short: no verdict on the
            # provider. Record the attempt and let the cancellation go on.
            self._settle(d, candidate, number, progress, answered=True)
            breaker.release()
            d.delivered = progress.chunks
            d.failures.append(_failure(candidate, ErrorClass.TIMEOUT.value, None))
            d.pending.append(
                _attempt_failed(
                    stamp,
                    candidate,
                    number,
                    ErrorClass.TIMEOUT.value,
                    progress,
                    started_ns,
                    message="the request's deadline passed",
                )
            )
            raise
        self._settle(d, candidate, number, progress, answered=True)
        self._note_breaker(d, breaker.record(time.monotonic(), None))
        if progress.first_ns is None:
            await d.sink.begin(served)
        end_ns = time.perf_counter_ns()
        success = _Success(served, candidate, progress)
        d.pending.append(
            AttemptSucceeded(
                **stamp.envelope(),
                attempt=number,
                model=candidate.model,
                provider=candidate.provider,
                status=200,
                latency_ns=end_ns - started_ns,
                ttft_ns=None if progress.first_ns is None else progress.first_ns - started_ns,
                ttlt_ns=end_ns - started_ns,
                chunks=progress.chunks,
                finish_reason=success.finish_reason,
                usage=success.usage,
            )
        )
        return success

    async def _relay(
        self,
        upstream: ChatRequest,
        candidate: Candidate,
        served: Served,
        d: _Dispatch,
        progress: _Progress,
    ) -> None:
        """Send ``upstream`` and forward its answer, within the route's phase deadlines.

        One cancel scope covers the attempt; its deadline moves as the answer progresses
        (headers, then the first token, then each gap between chunks), which costs a timer
        update per network read instead of a scope per await.
        """
        route_config = d.decision.route_config
        streaming = upstream.stream
        phase = "response headers" if streaming else "answer"
        limit = route_config.header_timeout_s if streaming else route_config.ttft_timeout_s
        adapter = self._adapters[candidate.provider]
        with anyio.CancelScope(deadline=anyio.current_time() + limit) as scope:
            async with await adapter.send(upstream) as stream:
                if streaming:
                    phase, limit = "first token", route_config.ttft_timeout_s
                    scope.deadline = anyio.current_time() + limit
                async for batch in stream.batches():
                    content: list[TextDelta | ToolCallDelta] = []
                    for chunk in batch:
                        if isinstance(chunk, TextDelta):
                            progress.chars += len(chunk.text)
                            progress.hasher.update(chunk.text.encode())
                            if progress.text is not None:
                                progress.text.append(chunk.text)
                            content.append(chunk)
                        elif isinstance(chunk, ToolCallDelta):
                            content.append(chunk)
                        elif isinstance(chunk, Finish):
                            progress.finish = chunk
                        elif isinstance(chunk, UsageReport):
                            progress.usage = chunk.usage
                            progress.usage_reported = True
                    if content:
                        if progress.first_ns is None:
                            progress.first_ns = time.perf_counter_ns()
                            await d.sink.begin(served)
                        progress.chunks += len(content)
                        await d.sink.send(content)
                    if streaming:
                        phase, limit = "next chunk", route_config.idle_timeout_s
                        scope.deadline = anyio.current_time() + limit
        if scope.cancelled_caught:
            raise ProviderError(
                ErrorClass.TIMEOUT,
                f"no {phase} within {limit} s",
                provider=candidate.provider,
                provider_code=f"{phase.replace(' ', '_')}_timeout",
                after_response=phase != "response headers" and streaming,
            )

    def _note_breaker(self, d: _Dispatch, transition: Transition | None) -> None:
        if transition is None:
            return
        envelope = d.stamp.envelope()
        policy = self._config.breaker
        if transition.new is BreakerState.OPEN:
            log.warning("circuit opened for provider %s", transition.provider)
            d.pending.append(
                CircuitOpened(
                    **envelope,
                    provider=transition.provider,
                    failures=transition.failures,
                    window_s=policy.window_s,
                    cooldown_s=policy.cooldown_s,
                )
            )
        elif transition.new is BreakerState.HALF_OPEN:
            d.pending.append(CircuitHalfOpened(**envelope, provider=transition.provider))
        else:
            log.info("circuit closed for provider %s", transition.provider)
            d.pending.append(CircuitClosed(**envelope, provider=transition.provider))

    def _settle(
        self,
        d: _Dispatch,
        candidate: Candidate,
        attempt: int,
        progress: _Progress,
        *,
        answered: bool,
    ) -> None:
        """Price the attempt from its reported usage. ``answered``: the provider began
        answering, so without usage its bill is unknown and the hold is counted."""
        self._boundary.settle(
            d.tab,
            d.stamp.envelope,
            attempt=attempt,
            model=candidate.model,
            provider=candidate.provider,
            usage=progress.usage if progress.usage_reported else None,
            held_on_failure=answered,
        )

    async def _fail(
        self,
        stamp: _Stamp,
        pending: list[Event],
        error: TollgateError,
        *,
        attempts: int,
        chunks: int = 0,
        tab: Tab | None = None,
    ) -> None:
        if tab is not None:
            pending += self._boundary.close(tab, stamp.envelope)
        pending.append(
            RequestFailed(
                **stamp.envelope(),
                error_type=error.type,
                message=error.message,
                attempts=attempts,
                latency_ns=time.perf_counter_ns() - stamp.received_ns,
                chunks_delivered=chunks,
            )
        )
        # Shielded: a request cancelled by its deadline still gets its terminal event.
        with anyio.CancelScope(shield=True):
            await self._store.submit(pending)
        pending.clear()


class _Success:
    """An attempt that produced a whole answer."""

    __slots__ = ("candidate", "finish_reason", "first_ns", "progress", "served", "usage")

    def __init__(self, served: Served, candidate: Candidate, progress: _Progress) -> None:
        self.served = served
        self.candidate = candidate
        self.progress = progress
        # The answer is whole: its finish and usage no longer change (AttemptSucceeded and
        # RequestCompleted both report them).
        self.finish_reason = progress.finish.reason if progress.finish is not None else "other"
        self.usage = token_usage(progress.usage)
        # When the client got the first content (perf_counter ns), if it got any.
        self.first_ns = progress.first_ns


class _Dispatch:
    """One request's dispatch state, shared by the attempts."""

    __slots__ = (
        "attempts",
        "call",
        "deadline",
        "decision",
        "delivered",
        "failed_providers",
        "failures",
        "fallbacks",
        "holding",
        "input_tokens",
        "overflowed_window",
        "pending",
        "sink",
        "skipped",
        "stamp",
        "tab",
    )

    def __init__(
        self,
        stamp: _Stamp,
        decision: RouteDecision,
        call: Call,
        sink: ResponseSink,
        pending: list[Event],
        tab: Tab,
        input_tokens: int,
    ) -> None:
        self.stamp = stamp
        self.tab = tab
        # The prompt's estimated tokens: what reservations price the input at.
        self.input_tokens = input_tokens
        self.decision = decision
        self.call = call
        self.sink = sink
        # Events not yet handed to the log.
        self.pending = pending
        self.attempts = 0
        self.fallbacks = 0
        self.failures: list[dict[str, Any]] = []
        # Candidates passed over at dispatch time, with the reason.
        self.skipped: list[str] = []
        # Content chunks forwarded before the request ended without an answer.
        self.delivered = 0
        # Monotonic seconds by which the request must be over; waits never run past it.
        self.deadline = 0.0
        # Providers that can't serve this request at all (auth, quota, model gone).
        self.failed_providers: set[str] = set()
        # After a context overflow only a larger window than this can help.
        self.overflowed_window = 0
        # Set while a cascade's cheap answer is held back: nothing reaches the client yet.
        self.holding: HeldAnswer | None = None


def _decision_events(
    stamp: _Stamp, decision: RouteDecision, input_estimate: int, inference: Inference | None
) -> list[Event]:
    events: list[Event] = []
    declared = decision.requested_task
    if inference is not None and declared and looks_mistyped(declared, inference):
        # Still routed by the declared task (the client's explicit choice); the operator sees
        # the mismatch.
        events.append(
            TaskMistyped(
                **stamp.envelope(),
                declared_task=declared,
                inferred_task=inference.task,
                signals=list(inference.signals),
            )
        )
    if decision.unrouted:
        events.append(
            TaskUnrouted(
                **stamp.envelope(),
                requested_task=decision.requested_task,
                default_route=decision.route,
            )
        )
    events.append(
        RouteDecided(
            **stamp.envelope(),
            route=decision.route,
            model_class=decision.model_class,
            selector=decision.selector_kind,
            chain=[c.model for c in decision.chain],
            dropped=[DroppedCandidate(d.model, d.provider, d.reason) for d in decision.dropped],
            input_tokens_estimate=input_estimate,
            max_tokens=decision.chain[0].max_tokens if decision.chain else 0,
        )
    )
    return events


def _attempt_failed(
    stamp: _Stamp,
    candidate: Candidate,
    number: int,
    error_class: str,
    progress: _Progress,
    started_ns: int,
    *,
    message: str,
    status: int | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> AttemptFailed:
    return AttemptFailed(
        **stamp.envelope(),
        attempt=number,
        model=candidate.model,
        provider=candidate.provider,
        error_class=error_class,
        status=status,
        provider_code=code,
        retry_after_ms=None if retry_after_s is None else round(retry_after_s * 1000),
        message=message,
        mid_stream=progress.chunks > 0,
        chunks_delivered=progress.chunks,
        latency_ns=time.perf_counter_ns() - started_ns,
    )


def _rejected(
    candidate: Candidate, exc: ProviderError, failures: list[dict[str, Any]]
) -> TollgateError:
    """The provider judged the request itself bad: it would fail anywhere, so it ends here."""
    bad = exc.error_class is ErrorClass.BAD_REQUEST
    return TollgateError(
        "invalid_request" if bad else "content_filtered",
        f"{candidate.provider} rejected the request: {exc.message}",
        status=400,
        code=f"upstream_{exc.error_class.value}",
        details={"attempts": failures},
    )


def _failure(candidate: Candidate, error_class: str, status: int | None) -> dict[str, Any]:
    return {
        "model": candidate.model,
        "provider": candidate.provider,
        "error_class": error_class,
        "status": status,
    }


def _no_route(decision: RouteDecision) -> TollgateError:
    reasons = ", ".join(f"{d.model}: {d.reason}" for d in decision.dropped) or "no candidates"
    unhealthy = any(d.reason == "provider_unavailable" for d in decision.dropped)
    return TollgateError(
        "no_route",
        f"no model of route {decision.route!r} can take this request ({reasons})",
        status=503 if unhealthy else 400,
        details={"dropped": [msgspec.to_builtins(d) for d in decision.dropped]},
    )


def _all_failed(failures: list[dict[str, Any]]) -> TollgateError:
    classes = {f["error_class"] for f in failures}
    # 429 tells a client to back off; 503 that capacity is short; 502 that upstreams broke.
    if classes == {ErrorClass.RATE_LIMITED.value}:
        status = 429
    elif classes <= {ErrorClass.OVERLOADED.value, ErrorClass.RATE_LIMITED.value}:
        status = 503
    else:
        status = 502
    summary = "; ".join(f"{f['model']}: {f['error_class']}" for f in failures)
    return TollgateError(
        "all_candidates_failed",
        f"every candidate failed ({summary})",
        status=status,
        details={"attempts": failures},
    )
