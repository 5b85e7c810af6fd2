"""Fake provider servers: real HTTP servers speaking each provider's wire protocol.

Tests, the demo and the benchmarks use them in place of the real APIs. They are scripted over
HTTP (a control API under ``/_fake/``), never through in-process hooks, so the same scripts
work against a fake started in another process.

OpenAI Chat Completions fake (``serve_fake_openai`` / ``create_openai_app``):

* Answers are deterministic in (model, messages): words from a fixed word cycle, one token per
  word, so ``completion_tokens`` = words sent (+ ``reasoning_tokens`` when scripted). A tool
  call costs 1 + ceil(len(arguments) / 4) tokens.
* ``prompt_tokens = 3 + Σ messages (4 + ceil(chars / 4) + 85 · non-text parts)
  + Σ tools (8 + ceil((len(name) + len(description)) / 4))``; ``count_prompt_tokens``
  computes it for a request body.
* ``max_completion_tokens`` (or ``max_tokens``) caps the answer; a cut answer finishes with
  ``length``.
* ``ModelBehaviour`` (answer length, chunking, delays, context window, tool use, usage extras)
  and the ``*Fault`` structs are also the JSON schema of ``PUT /_fake/models/{model}``; see
  ``_control`` for the routes and ``FakeOpenAIControl`` for a client.

Anthropic fake (``serve_fake_anthropic``) and Gemini fake (``serve_fake_gemini``): the same
settings, behaviours, faults, control API and token rule in those providers' wire formats (event
lines and 529s; ``data:``-only SSE, ``RetryInfo`` and ``promptFeedback``). Their module docstrings
say how each fault reads in that protocol.

Answer books (``ModelBehaviour.answers`` and ``quality``): for graded evaluations, a model can
be given the right answers to known prompts (keyed by ``prompt_key``, a digest of the user
text) and a quality, the fraction of them it gets right; which ones is a hash of (seed, key).

xAI fake (``serve_fake_xai``): the same machinery in xAI's dialect — UUID ids, reasoning counted
outside ``completion_tokens``, flat ``{"code", "error"}`` error bodies, 400 for a bad key.
"""

from ._anthropic import create_anthropic_app, serve_fake_anthropic
from ._behaviour import (
    BookAnswer,
    ContentFilterFault,
    DropFault,
    ErrorPreset,
    FakeOpenAISettings,
    Fault,
    HangBeforeFirstTokenFault,
    HangBeforeHeadersFault,
    MalformedSSEFault,
    MidStreamErrorFault,
    ModelBehaviour,
    NoDoneFault,
    StatusFault,
    ToolUse,
)
from ._client import FakeControlError, FakeOpenAIControl
from ._gemini import create_gemini_app, serve_fake_gemini
from ._openai import create_openai_app, serve_fake_openai
from ._prompt import count_prompt_tokens, prompt_key
from ._server import FakeServer
from ._state import FakeStats, LoggedRequest, ModelStats
from ._xai import create_xai_app, serve_fake_xai

# Every fake runs as the same FakeServer; the per-provider names stay for existing callers.
FakeOpenAIServer = FakeAnthropicServer = FakeGeminiServer = FakeXAIServer = FakeServer

__all__ = [
    "BookAnswer",
    "ContentFilterFault",
    "DropFault",
    "ErrorPreset",
    "FakeAnthropicServer",
    "FakeControlError",
    "FakeGeminiServer",
    "FakeOpenAIControl",
    "FakeOpenAIServer",
    "FakeOpenAISettings",
    "FakeServer",
    "FakeStats",
    "FakeXAIServer",
    "Fault",
    "HangBeforeFirstTokenFault",
    "HangBeforeHeadersFault",
    "LoggedRequest",
    "MalformedSSEFault",
    "MidStreamErrorFault",
    "ModelBehaviour",
    "ModelStats",
    "NoDoneFault",
    "StatusFault",
    "ToolUse",
    "count_prompt_tokens",
    "create_anthropic_app",
    "create_gemini_app",
    "create_openai_app",
    "create_xai_app",
    "prompt_key",
    "serve_fake_anthropic",
    "serve_fake_gemini",
    "serve_fake_openai",
    "serve_fake_xai",
]
