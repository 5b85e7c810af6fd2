"""Writing an answer as an Anthropic Messages SSE stream, with in-stream faults.

Events due at the same moment go out in one write, as in the OpenAI fake. The shared faults
mean here: ``MidStreamErrorFault`` an ``event: error`` (its preset mapped to Anthropic's error
type) and then the end of the body; ``DropFault`` a closed connection; ``MalformedSSEFault`` its
line as an event (given an ``event: content_block_delta`` line when it has none, since Anthropic
clients skip events without one); ``NoDoneFault`` a stream without ``message_stop``. Their
``after_chunks`` counts answer deltas (text or tool-input pieces), not thinking.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from ._anthropic_errors import error_event, preset_error
from ._anthropic_wire import PING, Answer, EventEncoder
from ._behaviour import Fault, MalformedSSEFault, MidStreamErrorFault, ModelBehaviour, NoDoneFault
from ._state import FakeState
from ._stream import open_stream, write_chunks

__all__ = ["write_stream"]


def _fault_chunk(fault: MidStreamErrorFault | MalformedSSEFault, request_id: str) -> bytes:
    if isinstance(fault, MalformedSSEFault):
        line = (
            fault.line
            if fault.line.startswith("event:")
            else ("event: content_block_delta\n" + fault.line)
        )
        return line.encode() + b"\n\n"
    error = preset_error(fault.error)
    if fault.message is not None:
        error = replace(error, message=fault.message)
    # Then a clean end of the body, without message_stop, as the API does.
    return error_event(error, request_id)


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
    if not await open_stream(request, resp, state, behaviour, fault):
        return

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

    chunks = (enc.json_delta(index, p) if tool else enc.text_delta(index, p) for p in pieces)
    if await write_chunks(
        request,
        resp,
        buf,
        chunks,
        len(pieces),
        behaviour,
        fault,
        lambda fault: _fault_chunk(fault, request_id),
    ):
        return
    if tool or pieces:
        buf.append(enc.block_stop(index))
    buf.append(enc.message_delta())
    if not isinstance(fault, NoDoneFault):
        buf.append(enc.message_stop())
    await resp.write(b"".join(buf))
