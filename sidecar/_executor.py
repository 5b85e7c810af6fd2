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
    DroppedCandidate,
    Event,
    EventStore,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RouteDecided,
    TaskUnrouted,
    TokenUsage,
    new_id,
)

from ._api import ChatCompletionRequest
from ._config import Config
from ._errors import TollgateError
from ._estimate import measure_prompt
from ._router import Candidate, RouteDecision, RouteQuery, UnknownTargetError, route

__all__ = ["Call", "ClientDisconnectedError", "Executor", "Outcome", "ResponseSink", "Served"]

_STOP_CLASSES = frozenset({ErrorClass.BAD_REQUEST, ErrorClass.CONTENT_FILTERED})


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
    finish_reason: str
    usage: Usage
    attempts: int
    fallbacks: int
    ttft_ns: int | None
    latency_ns: int


class _Progress:
    """What one attempt has produced so far."""

    __slots__ = ("chars", "chunks", "finish", "first_ns", "hasher", "text", "usage")

    def __init__(self, keep_text: bool) -> None:
        self.chunks = 0
        self.chars = 0
        self.first_ns: int | None = None
        self.finish: Finish | None = None
        self.usage = Usage()
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
    ) -> None:
        self._config = config
        self._config_hash = config_hash
        self._adapters = adapters
        self._store = store
        self._log_content = config.server.log_content

    async def execute(self, call: Call, sink: ResponseSink) -> Outcome:
        """Serve ``call`` through ``sink``; raise :class:`TollgateError` if it can't be served.

        Events are gathered in ``pending`` and handed to the log in as few batches as the
        request's phases allow: before each upstream call, and at the end.
        """
        stamp = _Stamp(call, self._config_hash)
        request = call.request
        size = measure_prompt(request.messages, request.tools)
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
        query = RouteQuery(
            selector=request.model,
            task=call.task,
            input_tokens=size.estimated_tokens,
            max_tokens=request.output_limit,
            needs=request.needs(),
        )
        try:
            decision = route(query, self._config)
        except UnknownTargetError as exc:
            error = TollgateError.invalid_request(
                f"{exc}; name a model, 'class:<class>' or 'task:<task>' from the config",
                code=f"{exc.kind}_not_found",
                param="model",
                status=404,
            )
            await self._fail(stamp, pending, error, attempts=0)
            raise error from None
        pending += _decision_events(stamp, decision, size.estimated_tokens)
        if not decision.chain:
            error = _no_route(decision)
            await self._fail(stamp, pending, error, attempts=0)
            raise error

        failures: list[dict[str, Any]] = []
        try:
            outcome = await self._dispatch(stamp, decision, call, sink, pending, failures)
        except anyio.get_cancelled_exc_class():
            # Not the deadline (that is caught inside): the sidecar is shutting down.
            await self._fail(
                stamp,
                pending,
                TollgateError("cancelled", "the sidecar is shutting down", status=503),
                attempts=len(failures),
            )
            raise
        if outcome is not None:
            return outcome
        if failures and failures[-1].get("deadline"):
            error = TollgateError(
                "deadline_exceeded",
                f"no answer within the route's deadline of {decision.route_config.deadline_s} s",
                status=504,
                details={"attempts": failures},
            )
        else:
            error = _all_failed(failures)
        await self._fail(stamp, pending, error, attempts=len(failures))
        raise error

    async def _dispatch(
        self,
        stamp: _Stamp,
        decision: RouteDecision,
        call: Call,
        sink: ResponseSink,
        pending: list[Event],
        failures: list[dict[str, Any]],
    ) -> Outcome | None:
        """Try the chain's candidates in order until one serves, within the route's deadline."""
        attempts = 0
        previous: tuple[Candidate, str] | None = None
        # After a context overflow only a larger window can help.
        overflowed_window = 0
        with anyio.move_on_after(decision.route_config.deadline_s):
            for candidate in decision.chain:
                if candidate.context_window <= overflowed_window:
                    continue
                if previous is not None:
                    pending.append(
                        FallbackTaken(
                            **stamp.envelope(),
                            from_model=previous[0].model,
                            to_model=candidate.model,
                            error_class=previous[1],
                        )
                    )
                attempts += 1
                result = await self._attempt(
                    stamp, decision, candidate, call, sink, pending, attempts, failures
                )
                if isinstance(result, Outcome):
                    return result
                previous = (candidate, result)
                if result == ErrorClass.CONTEXT_OVERFLOW:
                    overflowed_window = max(overflowed_window, candidate.context_window)
        return None

    async def _attempt(
        self,
        stamp: _Stamp,
        decision: RouteDecision,
        candidate: Candidate,
        call: Call,
        sink: ResponseSink,
        pending: list[Event],
        number: int,
        failures: list[dict[str, Any]],
    ) -> Outcome | str:
        """One try on one candidate: the outcome, or the error class that calls for the next.

        Raises :class:`TollgateError` when the request must end here (the answer was already
        being forwarded, or the provider judged the request itself bad).
        """
        served = Served(
            request_id=call.request_id,
            model=candidate.model,
            provider=candidate.provider,
            route=decision.route,
            model_class=candidate.model_class,
        )
        pending.append(
            AttemptStarted(
                **stamp.envelope(),
                attempt=number,
                model=candidate.model,
                provider=candidate.provider,
                upstream_model=candidate.upstream_model,
            )
        )
        await self._store.submit(pending)
        pending.clear()
        progress = _Progress(keep_text=self._log_content)
        started_ns = time.perf_counter_ns()
        upstream = ChatRequest(
            model=candidate.upstream_model,
            messages=call.request.messages,
            max_tokens=candidate.max_tokens,
            stream=call.request.stream,
            params=call.params,
        )
        try:
            await self._relay(upstream, candidate, served, sink, progress)
        except ProviderError as exc:
            failures.append(_failure(candidate, exc.error_class.value, exc.status))
            pending.append(
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
            error = _terminal_error(candidate, exc, progress.chunks, failures)
            if error is None:
                return exc.error_class.value
            await self._fail(stamp, pending, error, attempts=number, chunks=progress.chunks)
            raise error from None
        except ClientDisconnectedError:
            pending.append(
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
            await self._fail(stamp, pending, gone, attempts=number, chunks=progress.chunks)
            raise
        except anyio.get_cancelled_exc_class():
            # The deadline (or shutdown) cut the attempt short. Record it, shielded so that the
            # record is made despite the cancellation, then let the cancellation go on.
            failures.append(
                _failure(candidate, ErrorClass.TIMEOUT.value, None) | {"deadline": True}
            )
            pending.append(
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
        if progress.first_ns is None:
            await sink.begin(served)
        end_ns = time.perf_counter_ns()
        finish = progress.finish.reason if progress.finish is not None else "other"
        usage = _token_usage(progress.usage)
        request_ttft = None if progress.first_ns is None else progress.first_ns - call.received_ns
        pending += [
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
                finish_reason=finish,
                usage=usage,
            ),
            RequestCompleted(
                **stamp.envelope(),
                model=candidate.model,
                provider=candidate.provider,
                attempts=number,
                fallbacks=number - 1,
                finish_reason=finish,
                usage=usage,
                latency_ns=end_ns - call.received_ns,
                ttft_ns=request_ttft,
                ttlt_ns=end_ns - call.received_ns,
                completion_chars=progress.chars,
                completion_sha256=progress.hasher.hexdigest(),
                completion="".join(progress.text) if progress.text is not None else None,
            ),
        ]
        await self._store.submit(pending)
        pending.clear()
        return Outcome(
            served=served,
            finish_reason=finish,
            usage=progress.usage,
            attempts=number,
            fallbacks=number - 1,
            ttft_ns=request_ttft,
            latency_ns=end_ns - call.received_ns,
        )

    async def _relay(
        self,
        upstream: ChatRequest,
        candidate: Candidate,
        served: Served,
        sink: ResponseSink,
        progress: _Progress,
    ) -> None:
        adapter = self._adapters[candidate.provider]
        async with await adapter.send(upstream) as stream:
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
                if content:
                    if progress.first_ns is None:
                        progress.first_ns = time.perf_counter_ns()
                        await sink.begin(served)
                    progress.chunks += len(content)
                    await sink.send(content)

    async def _fail(
        self,
        stamp: _Stamp,
        pending: list[Event],
        error: TollgateError,
        *,
        attempts: int,
        chunks: int = 0,
    ) -> None:
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


def _decision_events(stamp: _Stamp, decision: RouteDecision, input_estimate: int) -> list[Event]:
    events: list[Event] = []
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


def _terminal_error(
    candidate: Candidate, exc: ProviderError, chunks: int, failures: list[dict[str, Any]]
) -> TollgateError | None:
    """The error that ends the request after this failure, or None to try the next candidate."""
    if chunks:
        return TollgateError(
            "upstream_stream_broken",
            f"{candidate.provider} failed after {chunks} chunks were delivered "
            f"({exc.error_class.value}): {exc.message}",
            status=502,
            code=exc.error_class.value,
            details={"chunks_delivered": chunks, "model": candidate.model},
        )
    if exc.error_class in _STOP_CLASSES:
        bad = exc.error_class is ErrorClass.BAD_REQUEST
        return TollgateError(
            "invalid_request" if bad else "content_filtered",
            f"{candidate.provider} rejected the request: {exc.message}",
            status=400,
            code=f"upstream_{exc.error_class.value}",
            details={"attempts": failures},
        )
    return None


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


def _token_usage(usage: Usage) -> TokenUsage:
    return TokenUsage(
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )
