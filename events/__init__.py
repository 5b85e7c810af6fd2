"""The append-only event log: event types, their encoding, and the stores that keep them."""

from ._codec import decode_event, decode_event_json, encode_event, encode_event_json
from ._ids import new_id
from ._sqlite import SQLiteEventStore, open_sqlite_store
from ._store import EventStore, StoreClosedError, StoredEvent, StoreError
from ._types import (
    AttemptFailed,
    AttemptStarted,
    AttemptSucceeded,
    CandidateSkipped,
    CircuitClosed,
    CircuitHalfOpened,
    CircuitOpened,
    DroppedCandidate,
    Event,
    EventBase,
    FallbackTaken,
    RequestCompleted,
    RequestFailed,
    RequestReceived,
    RetryScheduled,
    RouteDecided,
    TaskUnrouted,
    TokenUsage,
)

__all__ = [
    "AttemptFailed",
    "AttemptStarted",
    "AttemptSucceeded",
    "CandidateSkipped",
    "CircuitClosed",
    "CircuitHalfOpened",
    "CircuitOpened",
    "DroppedCandidate",
    "Event",
    "EventBase",
    "EventStore",
    "FallbackTaken",
    "RequestCompleted",
    "RequestFailed",
    "RequestReceived",
    "RetryScheduled",
    "RouteDecided",
    "SQLiteEventStore",
    "StoreClosedError",
    "StoreError",
    "StoredEvent",
    "TaskUnrouted",
    "TokenUsage",
    "decode_event",
    "decode_event_json",
    "encode_event",
    "encode_event_json",
    "new_id",
    "open_sqlite_store",
]
