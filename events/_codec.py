"""Encoding of events: compact msgpack in the store, JSON at the edges."""

from __future__ import annotations

import msgspec

from ._types import Event

__all__ = ["decode_event", "decode_event_json", "encode_event", "encode_event_json"]

_msgpack_encoder = msgspec.msgpack.Encoder()
_msgpack_decoder = msgspec.msgpack.Decoder(Event)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder(Event)

encode_event = _msgpack_encoder.encode
decode_event = _msgpack_decoder.decode
encode_event_json = _json_encoder.encode
decode_event_json = _json_decoder.decode
