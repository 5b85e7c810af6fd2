"""Where each event lives in the JetStream stream: subjects and message ids (pure functions).

Layout, under a prefix such as ``tollgate.ev``:

* ``<prefix>.budget.hold``: every event that can raise what a budget holds or lower a limit
  (``BudgetReserved``, ``BudgetToppedUp``, ``BudgetLimitChanged``). One literal subject: the
  optimistic-concurrency boundary of budget decisions. A decision appends with
  ``Nats-Expected-Last-Subject-Sequence`` on it, which the server checks in O(1) for a literal
  subject. Over a wildcard it walks every matching subject, so a boundary like
  ``<prefix>.budget.>`` with a subject per request slows down as the log grows (measured: 3,600
  conditional appends/s at 2,000 subjects, 130/s at 88,000).
* ``<prefix>.budget.<tenant>.<request>.<type>``: the other budget events (``CostSettled``,
  ``BudgetReservationExpired``, ``BudgetOverrun``, ``BudgetRefused``). They only lower what is
  held, or record a fact, so a decision made without them errs on the safe side and they need no
  condition. Every sidecar follows ``<prefix>.budget.>`` to keep its budget book current.
* ``<prefix>.req.<tenant>.<request>.<type>``: everything else.

Tenant and request ids are arbitrary strings, so they are encoded into subject tokens: an id made
of ``[A-Za-z0-9_-]`` (1 to 64 characters) is its own token, which keeps subjects readable
(``nats stream view``); anything else becomes ``~`` plus a hash (``~`` alone for the empty id).
Hashed tokens may in principle collide; readers compare the decoded event's ids, so a collision
costs a little extra reading, never a wrong answer.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Final

from ._codec import EVENT_TAGS
from ._types import (
    BudgetLimitChanged,
    BudgetOverrun,
    BudgetRefused,
    BudgetReservationExpired,
    BudgetReserved,
    BudgetToppedUp,
    CostSettled,
    Event,
)

__all__ = [
    "HOLD_TYPES",
    "Subjects",
    "msg_id",
    "token",
]

HOLD_TYPES: Final[tuple[type[Event], ...]] = (BudgetReserved, BudgetToppedUp, BudgetLimitChanged)
_BUDGET_TYPES: Final[tuple[type[Event], ...]] = (
    CostSettled,
    BudgetReservationExpired,
    BudgetOverrun,
    BudgetRefused,
)
_SAFE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Prefix tokens: letters, digits, '_' and '-' (no wildcards, no empty tokens).
_PREFIX: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
# A NATS header value must not hold CR or LF; ids are printable ASCII without ':' in practice.
_MSG_ID_SAFE: Final = re.compile(r"[\x21-\x7e]{1,128}")


def token(value: str) -> str:
    """A subject token for an id: itself when safe, else ``~`` and a hash."""
    if _SAFE.fullmatch(value):
        return value
    if not value:
        return "~"
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=15).digest()
    return "~" + base64.b32encode(digest).decode("ascii").lower()


def msg_id(event_id: str) -> str:
    """The ``Nats-Msg-Id`` of an event: its id when it fits a header, else a hash of it."""
    if _MSG_ID_SAFE.fullmatch(event_id):
        return event_id
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=20).digest()
    return "~" + digest.hex()


# Tags look like "cost_settled.v1": the dot would split the token, so it becomes "_".
_TYPE_TOKENS: Final = {cls: tag.replace(".", "_") for cls, tag in EVENT_TAGS.items()}


class Subjects:
    """The subject layout under one prefix."""

    __slots__ = ("budget", "hold", "prefix", "request", "stream_subjects")

    def __init__(self, prefix: str) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(
                f"subject prefix {prefix!r} must be dot-separated tokens of letters, digits,"
                " '_' and '-'"
            )
        self.prefix = prefix
        self.hold = f"{prefix}.budget.hold"
        # What a budget book follows: the holds and the other budget events.
        self.budget = f"{prefix}.budget.>"
        self.request = f"{prefix}.req"
        self.stream_subjects = f"{prefix}.>"

    def of(self, event: Event) -> str:
        """The subject ``event`` is stored under. Raises TypeError for a non-member type."""
        kind = type(event)
        type_token = _TYPE_TOKENS.get(kind)
        if type_token is None:
            raise TypeError(f"{kind.__name__} is not a member of the Event union")
        if kind in HOLD_TYPES:
            return self.hold
        area = "budget" if kind in _BUDGET_TYPES else "req"
        return f"{self.prefix}.{area}.{token(event.tenant)}.{token(event.request_id)}.{type_token}"

    def is_hold(self, event: Event) -> bool:
        """Whether ``event`` is stored on the hold subject (the budget decisions' boundary)."""
        return type(event) in HOLD_TYPES

    def of_request(self, request_id: str) -> str:
        """A filter for one request's events outside the hold subject."""
        return f"{self.prefix}.*.*.{token(request_id)}.*"
