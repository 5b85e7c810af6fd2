"""An incremental Server-Sent Events decoder (WHATWG framing, as the provider SDKs read it).

Bytes arrive in arbitrary pieces: an event, a line, a CRLF pair or a UTF-8 character may be split
across reads. The decoder keeps the unterminated tail and emits each event once its blank line
arrives, so any split of a transcript decodes to the same events.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["SSEDecoder", "ServerSentEvent"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


class ServerSentEvent(msgspec.Struct, frozen=True):
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed it bytes with :meth:`feed`; call :meth:`close` at end of stream."""

    __slots__ = ("_data", "_event", "_has_fields", "_id", "_pending", "_retry", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""
        # A read that ended on CR: a LF opening the next read belongs to the same line end.
        self._skip_lf = False
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if not chunk:
            # Changes nothing; in particular a CR-ended read still pairs with the next LF.
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._pending + chunk if self._pending else chunk
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(buf):
            end = match.start()
            if match.end() == len(buf) and buf[end:] == b"\r":
                self._skip_lf = True
            event = self._line(buf[start:end])
            if event is not None:
                events.append(event)
            start = match.end()
        self._pending = buf[start:]
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: dispatch fields whose lines were complete; drop a partial last line."""
        self._pending = b""
        event = self._dispatch()
        return [event] if event is not None else []

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            return None
        line = raw.decode("utf-8", errors="replace")
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self._retry = int(value)
        else:
            return None
        self._has_fields = True
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_fields:
            return None
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event, id=self._id, retry=self._retry
        )
        self._data = []
        self._event = None
        self._retry = None
        self._has_fields = False
        # Per the spec the last event id persists across events; the providers never rely on it.
        return event
