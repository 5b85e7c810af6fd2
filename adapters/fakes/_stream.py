"""Writing an answer as a Chat Completions SSE stream, with in-stream faults.

Chunks that are due at the same moment go out in one write: with no delays configured the whole
stream is a single write after the headers, which keeps the fake cheap as a benchmark baseline.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ._answer import AnswerPlan
from ._behaviour import (
    DropFault,
    Fault,
    HangBeforeFirstTokenFault,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
)
from ._errors import ErrorContext
from ._http import Dialect, hang
from ._state import FakeState
from ._wire import DONE, ChunkEncoder, sse_event

__all__ = ["write_stream"]

_InStreamFault = DropFault | MidStreamErrorFault | MalformedSSEFault


def _close(request: web.BaseRequest) -> None:
    # close() (not abort()) so the chunks already written reach the client before the FIN.
    transport = request.transport
    if transport is not None:
        transport.close()


async def write_stream(
    request: web.Request,
    resp: web.StreamResponse,
    state: FakeState,
    plan: AnswerPlan,
    enc: ChunkEncoder,
    behaviour: ModelBehaviour,
    fault: Fault | None,
    include_usage: bool,
    error_ctx: ErrorContext,
    dialect: Dialect,
) -> None:
    """Send the headers and the stream for ``plan``, applying ``fault`` where it belongs."""
    await resp.prepare(request)  # a StreamResponse sends its headers right away
    if isinstance(fault, HangBeforeFirstTokenFault):
        await hang(request, state)
        return
    if behaviour.ttft_s:
        await asyncio.sleep(behaviour.ttft_s)

    in_stream = fault if isinstance(fault, _InStreamFault) else None
    fault_at = in_stream.after_chunks if in_stream is not None else -1
    tool = plan.tool_call
    start = enc.role() if tool is None else enc.tool_call_start(tool.id, tool.name)
    pieces = plan.pieces
    buf: list[bytes] = []

    for i, piece in enumerate(pieces):
        if (
            i == fault_at
            and in_stream is not None
            and await _inject(request, resp, buf, in_stream, error_ctx, dialect)
        ):
            return
        if i == 0:
            # The role delta travels with the first answer chunk, as both are due at once.
            buf.append(start)
        elif behaviour.chunk_delay_s:
            await resp.write(b"".join(buf))
            buf.clear()
            await asyncio.sleep(behaviour.chunk_delay_s)
        buf.append(enc.content(piece) if tool is None else enc.tool_arguments(piece))

    if (
        fault_at >= len(pieces)
        and in_stream is not None
        and await _inject(request, resp, buf, in_stream, error_ctx, dialect)
    ):
        return
    if not pieces:
        buf.append(start)
    buf.append(enc.finish(plan.finish_reason))
    if include_usage:
        buf.append(enc.usage(plan))
    if not isinstance(fault, NoDoneFault):
        buf.append(DONE)
    await resp.write(b"".join(buf))


async def _inject(
    request: web.Request,
    resp: web.StreamResponse,
    buf: list[bytes],
    fault: _InStreamFault,
    error_ctx: ErrorContext,
    dialect: Dialect,
) -> bool:
    """Apply an in-stream fault at its position; True when it ends the stream."""
    if isinstance(fault, MalformedSSEFault):
        buf.append(fault.line.encode() + b"\n\n")
        return False
    if isinstance(fault, MidStreamErrorFault):
        buf.append(sse_event(dialect.error_event(fault.error, error_ctx, fault.message)))
        # Then a clean end of the body, without [DONE], as OpenAI does.
        await resp.write(b"".join(buf))
        return True
    if buf:
        await resp.write(b"".join(buf))
    _close(request)
    return True
