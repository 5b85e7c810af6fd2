"""Writing an answer as an SSE stream, with in-stream faults: the pacing and faults every fake
shares (:func:`open_stream`, :func:`write_chunks`), and the Chat Completions stream.

Chunks that are due at the same moment go out in one write: with no delays configured the whole
stream is a single write after the headers, which keeps the fake cheap as a benchmark baseline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

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

__all__ = ["open_stream", "write_chunks", "write_stream"]

_InStreamFault = DropFault | MidStreamErrorFault | MalformedSSEFault
# What a provider sends for a fault that puts something into the stream.
FaultChunk = Callable[[MidStreamErrorFault | MalformedSSEFault], bytes]


async def open_stream(
    request: web.Request,
    resp: web.StreamResponse,
    state: FakeState,
    behaviour: ModelBehaviour,
    fault: Fault | None,
) -> bool:
    """Send the headers and wait for the first token; False when ``fault`` hung there instead
    (the stream is over)."""
    await resp.prepare(request)  # a StreamResponse sends its headers right away
    if isinstance(fault, HangBeforeFirstTokenFault):
        await hang(request, state)
        return False
    if behaviour.ttft_s:
        await asyncio.sleep(behaviour.ttft_s)
    return True


async def write_chunks(
    request: web.Request,
    resp: web.StreamResponse,
    buf: list[bytes],
    chunks: Iterable[bytes],
    count: int,
    behaviour: ModelBehaviour,
    fault: Fault | None,
    fault_chunk: FaultChunk,
) -> bool:
    """Queue the ``count`` answer ``chunks`` after ``buf``, ``chunk_delay_s`` apart, with an
    in-stream ``fault`` before the chunk its ``after_chunks`` names (after the last when that
    is beyond them).

    True when the fault ended the stream; else what is still to send stays in ``buf``, for
    the caller to finish the stream with. ``fault_chunk`` gives the bytes of a malformed line
    or a mid-stream error, which differ by provider.
    """
    in_stream = fault if isinstance(fault, _InStreamFault) else None
    fault_at = in_stream.after_chunks if in_stream is not None else -1
    for i, chunk in enumerate(chunks):
        if (
            i == fault_at
            and in_stream is not None
            and await _inject(request, resp, buf, in_stream, fault_chunk)
        ):
            return True
        if i and behaviour.chunk_delay_s:
            await resp.write(b"".join(buf))
            buf.clear()
            await asyncio.sleep(behaviour.chunk_delay_s)
        buf.append(chunk)
    return (
        fault_at >= count
        and in_stream is not None
        and await _inject(request, resp, buf, in_stream, fault_chunk)
    )


async def _inject(
    request: web.Request,
    resp: web.StreamResponse,
    buf: list[bytes],
    fault: _InStreamFault,
    fault_chunk: FaultChunk,
) -> bool:
    """Apply an in-stream fault at its position; True when it ends the stream."""
    if isinstance(fault, MalformedSSEFault):
        buf.append(fault_chunk(fault))
        return False
    if isinstance(fault, MidStreamErrorFault):
        # Then a clean end of the body, without the stream's terminator, as the APIs do.
        buf.append(fault_chunk(fault))
        await resp.write(b"".join(buf))
        return True
    if buf:
        await resp.write(b"".join(buf))
    # close() (not abort()) so the chunks already written reach the client before the FIN.
    transport = request.transport
    if transport is not None:
        transport.close()
    return True


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
    """Send the headers and the Chat Completions stream for ``plan``, applying ``fault``."""
    if not await open_stream(request, resp, state, behaviour, fault):
        return

    def fault_chunk(fault: MidStreamErrorFault | MalformedSSEFault) -> bytes:
        if isinstance(fault, MalformedSSEFault):
            return fault.line.encode() + b"\n\n"
        return sse_event(dialect.error_event(fault.error, error_ctx, fault.message))

    tool = plan.tool_call
    start = enc.role() if tool is None else enc.tool_call_start(tool.id, tool.name)
    pieces = plan.pieces

    def chunks() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            chunk = enc.content(piece) if tool is None else enc.tool_arguments(piece)
            # The role delta travels with the first answer chunk, as both are due at once.
            yield start + chunk if i == 0 else chunk

    buf: list[bytes] = []
    if await write_chunks(request, resp, buf, chunks(), len(pieces), behaviour, fault, fault_chunk):
        return
    if not pieces:
        buf.append(start)
    buf.append(enc.finish(plan.finish_reason))
    if include_usage:
        buf.append(enc.usage(plan))
    if not isinstance(fault, NoDoneFault):
        buf.append(DONE)
    await resp.write(b"".join(buf))
