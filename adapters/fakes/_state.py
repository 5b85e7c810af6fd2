"""The fake server's mutable state: per-model behaviour and armed faults, counters, request log."""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import msgspec

from ._behaviour import (
    STREAM_ONLY_FAULTS,
    FakeOpenAISettings,
    Fault,
    ModelBehaviour,
)

__all__ = [
    "UNKNOWN_MODEL",
    "FakeState",
    "FakeStats",
    "LoggedRequest",
    "ModelState",
    "ModelStats",
    "overlay",
]


class ModelStats(msgspec.Struct):
    requests: int = 0
    # Outcome name -> count: "ok", "http_<status>" for any error response (faulted or not),
    # or a stream fault's kind ("drop", "mid_stream_error", "malformed_sse", "no_done",
    # "hang_before_headers", "hang_before_first_token", "content_filter").
    outcomes: dict[str, int] = msgspec.field(default_factory=dict)


class FakeStats(msgspec.Struct):
    """``GET /_fake/stats``. Requests without a readable model count under ``"<unknown>"``."""

    requests: int = 0
    models: dict[str, ModelStats] = msgspec.field(default_factory=dict)


class LoggedRequest(msgspec.Struct):
    """One ``POST /v1/chat/completions`` as received (``GET /_fake/requests``)."""

    seq: int
    request_id: str
    model: str
    stream: bool
    outcome: str
    # Request headers without Authorization: the log never holds a key.
    headers: dict[str, str]
    # The request body as sent (JSON null when it was not valid JSON).
    body: msgspec.Raw

    def body_json(self) -> object:
        return msgspec.json.decode(self.body)


class _Armed:
    """A fault and how many more times it may fire (None: unlimited)."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.times


class ModelState:
    """One model's behaviour and its faults' progress (counters and seeded RNG)."""

    __slots__ = ("_armed", "_rng", "behaviour")

    def __init__(self, behaviour: ModelBehaviour) -> None:
        self.behaviour = behaviour
        self._armed = [_Armed(f) for f in behaviour.faults]
        self._rng = random.Random(behaviour.seed)

    def pick_fault(self, stream: bool) -> Fault | None:
        """The fault for the next request, if one fires; consumes it.

        Faults that cannot apply (stream-only ones for a non-streaming request, spent ones)
        are skipped without drawing a random number, so a seeded sequence only depends on
        the eligible requests.
        """
        for armed in self._armed:
            fault = armed.fault
            if armed.remaining == 0 or (not stream and isinstance(fault, STREAM_ONLY_FAULTS)):
                continue
            if fault.rate is not None and self._rng.random() >= fault.rate:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
            return fault
        return None


def overlay(base: ModelBehaviour, patch: bytes) -> ModelBehaviour:
    """``base`` with the fields of the JSON object ``patch`` replaced.

    Raises ``msgspec.DecodeError``/``ValidationError`` (subclasses of ``msgspec.MsgspecError``)
    for bad JSON or fields.
    """
    fields = msgspec.json.decode(patch, type=dict[str, object])
    merged = msgspec.to_builtins(base)
    merged.update(fields)
    return msgspec.convert(merged, ModelBehaviour)


UNKNOWN_MODEL = "<unknown>"


class FakeState:
    __slots__ = ("_custom", "_models", "_seq", "log", "settings", "stats", "stopping")

    def __init__(self, settings: FakeOpenAISettings) -> None:
        self.settings = settings
        self._models: dict[str, ModelState] = {}
        # Models whose behaviour was set through the control API.
        self._custom: dict[str, ModelBehaviour] = {}
        self._seq = 0
        self.stats = FakeStats()
        self.log: deque[LoggedRequest] = deque(maxlen=settings.request_log_size)
        # Set when the server shuts down: releases requests that hang on purpose.
        self.stopping = asyncio.Event()

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def model(self, name: str) -> ModelState:
        state = self._models.get(name)
        if state is None:
            state = self._models[name] = ModelState(self.settings.default)
        return state

    def behaviour(self, name: str) -> ModelBehaviour:
        custom = self._custom.get(name)
        return custom if custom is not None else self.settings.default

    def put(self, name: str, behaviour: ModelBehaviour) -> None:
        self._custom[name] = behaviour
        self._models[name] = ModelState(behaviour)

    def delete(self, name: str) -> None:
        self._custom.pop(name, None)
        self._models.pop(name, None)

    def reset(self) -> None:
        self._custom.clear()
        self._models.clear()
        self.stats = FakeStats()
        self.log.clear()

    def known_models(self) -> list[str]:
        if self.settings.models:
            return list(self.settings.models)
        seen = set(self._custom) | set(self.stats.models)
        seen.discard(UNKNOWN_MODEL)
        return sorted(seen)

    def track(self, model: str, entry: LoggedRequest | None) -> Callable[[str], None]:
        """Log ``entry`` (None: the log is off) and return the request's ``settle(outcome)``,
        which counts the outcome and records it in the entry."""
        if entry is not None:
            self.log.append(entry)

        def settle(outcome: str) -> None:
            self.count(model, outcome)
            if entry is not None:
                entry.outcome = outcome

        return settle

    def count(self, model: str, outcome: str) -> None:
        self.stats.requests += 1
        per_model = self.stats.models.get(model)
        if per_model is None:
            per_model = self.stats.models[model] = ModelStats()
        per_model.requests += 1
        per_model.outcomes[outcome] = per_model.outcomes.get(outcome, 0) + 1
