"""Encoding of events: compact msgpack in the store, JSON at the edges."""

from __future__ import annotations

from typing import Final, get_args

import msgspec

from ._types import Event

__all__ = [
    "EVENT_TAGS",
    "checked_tag",
    "decode_event",
    "decode_event_json",
    "encode_event",
    "encode_event_json",
]

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1

# Only members of the union can be decoded again, so only they may be stored.
EVENT_TAGS: Final[dict[type[Event], str]] = {
    cls: str(cls.__struct_config__.tag) for cls in get_args(Event)
}

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(Event)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Event)

encode_event = _msgpack_encoder.encode
decode_event = _msgpack_decoder.decode
encode_event_json = _json_encoder.encode
decode_event_json = _json_decoder.decode


def checked_tag(event: Event) -> str:
    """The tag of a storable ``event``. TypeError for a type outside the union, ValueError for a
    ``ts_ns`` that does not fit a 64-bit integer (the stores' column and msgpack's ``int``)."""
    tag = EVENT_TAGS.get(type(event))
    if tag is None:
        raise TypeError(f"{type(event).__name__} is not a member of the Event union")
    if not _I64_MIN <= event.ts_ns <= _I64_MAX:
        raise ValueError(f"ts_ns out of range for a 64-bit integer: {event.ts_ns}")
    return tag
