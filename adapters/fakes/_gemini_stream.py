"""Writing a Gemini answer as an ``alt=sse`` stream, with in-stream faults.

Only ``data: `` lines, no ``event:`` or comment lines, no terminator: the stream ends at EOF
(google-genai treats any other line as raw JSON and fails on it). Chunks due at the same
moment go out in one write, as in the OpenAI fake.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from ._behaviour import Fault, MalformedSSEFault, MidStreamErrorFault, ModelBehaviour, NoDoneFault
from ._gemini_errors import GeminiErrorContext, error_event, preset_error
from ._gemini_wire import SSE_END, GeminiEncoder, Step, sse_event
from ._state import FakeState
from ._stream import open_stream, write_chunks

__all__ = ["write_gemini_stream"]

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
    if not await open_stream(request, resp, state, behaviour, fault):
        return

    def fault_chunk(fault: MidStreamErrorFault | MalformedSSEFault) -> bytes:
        if isinstance(fault, MalformedSSEFault):
            line = _GEMINI_MALFORMED_LINE if fault.line == _OPENAI_MALFORMED_LINE else fault.line
            return line.encode() + SSE_END
        # Then a clean end of the body (EOF), as Gemini does.
        return error_event(preset_error(fault.error), error_ctx, fault.message)

    # NoDoneFault: every chunk, but the last one without its finishReason.
    finishes = not isinstance(fault, NoDoneFault)

    def chunks() -> Iterator[bytes]:
        generated = 0
        for i, step in enumerate(steps):
            generated += step.tokens
            finish = finishes and i == len(steps) - 1
            yield sse_event(encoder.chunk(step, generated, finish=finish))

    buf: list[bytes] = [sse_event(encoder.thought_chunk())] if thoughts else []
    if await write_chunks(request, resp, buf, chunks(), len(steps), behaviour, fault, fault_chunk):
        return
    await resp.write(b"".join(buf))
