"""Writing an answer as an Anthropic Messages SSE stream, with in-stream faults.

Events due at the same moment go out in one write, as in the OpenAI fake. The shared faults
mean here: ``MidStreamErrorFault`` an ``event: error`` (its preset mapped to Anthropic's error
type) and then the end of the body; ``DropFault`` a closed connection; ``MalformedSSEFault`` its
line as an event (given an ``event: content_block_delta`` line when it has none, since Anthropic
clients skip events without one); ``NoDoneFault`` a stream without ``message_stop``. Their
``after_chunks`` counts answer deltas (text or tool-input pieces), not thinking.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiohttp import web

from ._anthropic_errors import error_event, preset_error
from ._anthropic_wire import PING, Answer, EventEncoder
from ._behaviour import (
    DropFault,
    Fault,
    HangBeforeFirstTokenFault,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
)
from ._http import hang
from ._state import FakeState

__all__ = ["write_stream"]

_InStreamFault = DropFault | MidStreamErrorFault | MalformedSSEFault


def _close(request: web.BaseRequest) -> None:
    # close() (not abort()) so the events already written reach the client before the FIN.
    transport = request.transport
    if transport is not None:
        transport.close()


async def write_stream(
    request: web.Request,
    resp: web.StreamResponse,
    state: FakeState,
    answer: Answer,
    enc: EventEncoder,
    behaviour: ModelBehaviour,
    fault: Fault | None,
    request_id: str,
) -> None:
    """Send the headers and the stream for ``answer``, applying ``fault`` where it belongs."""
    await resp.prepare(request)
    if isinstance(fault, HangBeforeFirstTokenFault):
        await hang(request, state)
        return
    if behaviour.ttft_s:
        await asyncio.sleep(behaviour.ttft_s)

    in_stream = fault if isinstance(fault, _InStreamFault) else None
    fault_at = in_stream.after_chunks if in_stream is not None else -1
    buf: list[bytes] = [enc.message_start()]
    index = 0
    if answer.thinking is not None:
        buf += [
            enc.thinking_start(0),
            PING,
            enc.thinking_delta(0, answer.thinking),
            enc.signature_delta(0),
            enc.block_stop(0),
        ]
        index = 1
    tool = answer.plan.tool_call is not None
    pieces = answer.plan.pieces
    # A tool call's block opens even with no input pieces; a text block only with text.
    if tool or pieces:
        buf.append(enc.tool_start(index) if tool else enc.text_start(index))
        if index == 0:
            buf.append(PING)  # where the API sends it: after the first block opens
        if tool:
            buf.append(enc.json_delta(index, ""))  # the API's first input delta is empty
    elif index == 0:
        buf.append(PING)

    for i, piece in enumerate(pieces):
        if i == fault_at and in_stream is not None:
            if await _inject(request, resp, buf, in_stream, request_id):
                return
        elif i and behaviour.chunk_delay_s:
            await resp.write(b"".join(buf))
            buf.clear()
            await asyncio.sleep(behaviour.chunk_delay_s)
        buf.append(enc.json_delta(index, piece) if tool else enc.text_delta(index, piece))

    if (
        fault_at >= len(pieces)
        and in_stream is not None
        and await _inject(request, resp, buf, in_stream, request_id)
    ):
        return
    if tool or pieces:
        buf.append(enc.block_stop(index))
    buf.append(enc.message_delta())
    if not isinstance(fault, NoDoneFault):
        buf.append(enc.message_stop())
    await resp.write(b"".join(buf))


async def _inject(
    request: web.Request,
    resp: web.StreamResponse,
    buf: list[bytes],
    fault: _InStreamFault,
    request_id: str,
) -> bool:
    """Apply an in-stream fault at its position; True when it ends the stream."""
    if isinstance(fault, MalformedSSEFault):
        line = (
            fault.line
            if fault.line.startswith("event:")
            else ("event: content_block_delta\n" + fault.line)
        )
        buf.append(line.encode() + b"\n\n")
        return False
    if isinstance(fault, MidStreamErrorFault):
        error = preset_error(fault.error)
        if fault.message is not None:
            error = replace(error, message=fault.message)
        buf.append(error_event(error, request_id))
        # Then a clean end of the body, without message_stop, as the API does.
        await resp.write(b"".join(buf))
        return True
    if buf:
        await resp.write(b"".join(buf))
    _close(request)
    return True
