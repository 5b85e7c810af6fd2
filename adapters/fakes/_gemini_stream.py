"""Writing a Gemini answer as an ``alt=sse`` stream, with in-stream faults.

Only ``data: `` lines, no ``event:`` or comment lines, no terminator: the stream ends at EOF
(google-genai treats any other line as raw JSON and fails on it). Chunks due at the same
moment go out in one write, as in the OpenAI fake.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ._behaviour import (
    DropFault,
    Fault,
    HangBeforeFirstTokenFault,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
)
from ._gemini_errors import GeminiErrorContext, error_event, preset_error
from ._gemini_wire import SSE_END, GeminiEncoder, Step, sse_event
from ._http import hang
from ._state import FakeState

__all__ = ["write_gemini_stream"]

_InStreamFault = DropFault | MidStreamErrorFault | MalformedSSEFault
# MalformedSSEFault's default line is an OpenAI chunk; a Gemini stream gets a Gemini one.
_OPENAI_MALFORMED_LINE = MalformedSSEFault().line
_GEMINI_MALFORMED_LINE = 'data: {"candidates": [{"content": {"parts": [{"text": "oops'


async def write_gemini_stream(
    request: web.Request,
    resp: web.StreamResponse,
    state: FakeState,
    encoder: GeminiEncoder,
    steps: list[Step],
    behaviour: ModelBehaviour,
    fault: Fault | None,
    error_ctx: GeminiErrorContext,
    thoughts: bool,
) -> None:
    """Send the headers and the stream of ``steps``, applying ``fault`` where it belongs."""
    await resp.prepare(request)
    if isinstance(fault, HangBeforeFirstTokenFault):
        await hang(request, state)
        return
    if behaviour.ttft_s:
        await asyncio.sleep(behaviour.ttft_s)

    in_stream = fault if isinstance(fault, _InStreamFault) else None
    fault_at = in_stream.after_chunks if in_stream is not None else -1
    # NoDoneFault: every chunk, but the last one without its finishReason.
    finishes = not isinstance(fault, NoDoneFault)
    buf: list[bytes] = [sse_event(encoder.thought_chunk())] if thoughts else []
    generated = 0
    last = len(steps) - 1
    for i, step in enumerate(steps):
        if (
            i == fault_at
            and in_stream is not None
            and await _inject(request, resp, buf, in_stream, error_ctx)
        ):
            return
        if i and behaviour.chunk_delay_s:
            await resp.write(b"".join(buf))
            buf.clear()
            await asyncio.sleep(behaviour.chunk_delay_s)
        generated += step.tokens
        buf.append(sse_event(encoder.chunk(step, generated, finish=finishes and i == last)))
    if (
        fault_at >= len(steps)
        and in_stream is not None
        and await _inject(request, resp, buf, in_stream, error_ctx)
    ):
        return
    await resp.write(b"".join(buf))


async def _inject(
    request: web.Request,
    resp: web.StreamResponse,
    buf: list[bytes],
    fault: _InStreamFault,
    error_ctx: GeminiErrorContext,
) -> bool:
    """Apply an in-stream fault at its position; True when it ends the stream."""
    if isinstance(fault, MalformedSSEFault):
        line = _GEMINI_MALFORMED_LINE if fault.line == _OPENAI_MALFORMED_LINE else fault.line
        buf.append(line.encode() + SSE_END)
        return False
    if isinstance(fault, MidStreamErrorFault):
        # Then a clean end of the body (EOF), as Gemini does.
        buf.append(error_event(preset_error(fault.error), error_ctx, fault.message))
        await resp.write(b"".join(buf))
        return True
    if buf:
        await resp.write(b"".join(buf))
    # close() (not abort()) so the chunks already written reach the client before the FIN.
    if request.transport is not None:
        request.transport.close()
    return True
