"""The fake's answer to a request: a deterministic function of (model, prompt) and behaviour.

A text answer is a sequence of words from a fixed pseudo-random word cycle, starting at an
offset given by the prompt's digest. Each word is exactly one token; every token after the
first carries its leading space, so the chunks concatenate into words joined by single spaces.
A tool call costs 1 token for the call plus 1 per 4 characters of its JSON arguments (the
argument fragments are those 4-character pieces). Reasoning tokens are invisible but count
towards ``completion_tokens`` and the max-tokens limit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import msgspec

from ._behaviour import BookAnswer, ModelBehaviour, ToolUse
from ._prompt import ChatRequest, ToolChoiceFunction, answer_seed, book_key, prompt_tokens

__all__ = [
    "AnswerPlan",
    "ToolCallPlan",
    "UnknownToolChoice",
    "answer_words",
    "book_answer",
    "plan_answer",
    "tool_arguments",
]

_WORDS = (
    "alpha", "amber", "apple", "arrow", "basil", "beach", "birch", "blue", "brook", "cedar",
    "chalk", "cloud", "coral", "crane", "delta", "dune", "eagle", "ember", "fern", "field",
    "flint", "frost", "grove", "harbor", "hazel", "heron", "iris", "ivory", "jade", "juniper",
    "kelp", "lake", "lark", "lemon", "linen", "maple", "marsh", "meadow", "mint", "moss",
    "north", "oak", "ocean", "olive", "onyx", "opal", "pearl", "pine", "plum", "quartz",
    "raven", "reed", "river", "sage", "sand", "slate", "spruce", "stone", "tide", "umber",
    "vale", "willow", "wren", "zephyr",
)  # fmt: skip
_CYCLE_LEN = 4096


def _build_cycle() -> tuple[str, ...]:
    # A 64-bit LCG (Knuth's MMIX constants) picks the words: fixed arithmetic, so the cycle is
    # the same on every Python version and platform, unlike `random`'s helpers.
    x = 0x7011_6A7E
    out: list[str] = []
    for _ in range(_CYCLE_LEN):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFF_FFFF_FFFF_FFFF
        out.append(_WORDS[x >> 58])
    return tuple(out)


_CYCLE = _build_cycle()


def answer_words(seed: int, n: int) -> list[str]:
    """``n`` words of the cycle starting at ``seed``'s offset."""
    start = seed % _CYCLE_LEN
    if start + n <= _CYCLE_LEN:
        return list(_CYCLE[start : start + n])
    return [_CYCLE[(start + i) % _CYCLE_LEN] for i in range(n)]


class UnknownToolChoice(ValueError):
    """``tool_choice`` names a function that is not among the request's tools."""


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    id: str
    name: str


@dataclass(slots=True)
class AnswerPlan:
    """What to send. ``pieces`` are the stream chunks' payloads: text, or argument fragments
    when ``tool_call`` is set; ``piece_tokens`` says how many tokens each one holds."""

    pieces: list[str]
    piece_tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tool_call: ToolCallPlan | None = None
    # Tokens outside the pieces: 1 for a tool call's id and name.
    extra_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return sum(self.piece_tokens) + self.reasoning_tokens + self.extra_tokens

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def cut(self, after_chunks: int, finish_reason: str) -> None:
        """End the answer after ``after_chunks`` chunks with ``finish_reason``."""
        del self.pieces[after_chunks:]
        del self.piece_tokens[after_chunks:]
        self.finish_reason = finish_reason


def _group(tokens: list[str], chunks: int | None) -> tuple[list[str], list[int]]:
    """Split ``tokens`` into ``chunks`` near-equal runs (None: one token per chunk)."""
    n = len(tokens)
    if chunks is None or chunks >= n:
        return tokens, [1] * n
    q, r = divmod(n, chunks)
    pieces: list[str] = []
    counts: list[int] = []
    i = 0
    for c in range(chunks):
        size = q + (1 if c < r else 0)
        pieces.append("".join(tokens[i : i + size]))
        counts.append(size)
        i += size
    return pieces, counts


def _pick_tool(request: ChatRequest, tool_use: ToolUse) -> tuple[str, dict[str, object]] | None:
    tools = [t.function for t in request.tools or () if t.function is not None]
    if not tools:
        return None
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction) and choice.type != "function":
        # Other object forms (allowed_tools, custom tools) are treated like "auto".
        choice = "auto"
    if isinstance(choice, ToolChoiceFunction):
        wanted = choice.function.name if choice.function is not None else None
        for fn in tools:
            if fn.name == wanted:
                return fn.name, fn.parameters or {}
        raise UnknownToolChoice(wanted or "")
    if choice == "none":
        return None
    if choice == "required" or tool_use == "offered":
        return tools[0].name, tools[0].parameters or {}
    return None


def _schema_value(spec: object, word: str) -> object:
    """A value valid for a (simple) JSON Schema: its first enum value, else one by type."""
    if not isinstance(spec, dict):
        return word
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    defaults: dict[object, object] = {
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
        "null": None,
    }
    return defaults.get(kind, word)


def tool_arguments(parameters: dict[str, object], seed: int) -> str:
    """JSON arguments holding every required property of ``parameters`` (in ``required``
    order): an enum's first value, a zero value for non-string types, else a word."""
    required = parameters.get("required")
    props = parameters.get("properties")
    if not isinstance(required, list) or not required:
        return "{}"
    specs = props if isinstance(props, dict) else {}
    names = [r for r in required if isinstance(r, str)]
    words = answer_words(seed, len(names))
    args = {
        name: _schema_value(specs.get(name), word) for name, word in zip(names, words, strict=True)
    }
    return msgspec.json.encode(args).decode()


def _tool_call_id(seed: int) -> str:
    return "call_" + hashlib.blake2b(seed.to_bytes(8, "big"), digest_size=12).hexdigest()


def book_answer(request: ChatRequest, behaviour: ModelBehaviour) -> BookAnswer | None:
    """The book's right answer if ``request`` is in the model's answer book and this model is
    right on it: a hash of (seed, key) below ``quality`` (see ``ModelBehaviour.answers``)."""
    if not behaviour.answers:
        return None
    key = book_key(request)
    right = behaviour.answers.get(key)
    if right is None:
        return None
    digest = hashlib.blake2b(
        behaviour.seed.to_bytes(8, "big", signed=True) + key.encode(), digest_size=8
    ).digest()
    draw = int.from_bytes(digest, "big") / 2**64
    return right if draw < behaviour.quality else None


# A book answer's tokens keep its exact whitespace (code needs its newlines and indents): each
# token is a run of spaces followed by a run of non-spaces.
_TOKEN = re.compile(r"\s*\S+")


def plan_answer(request: ChatRequest, behaviour: ModelBehaviour, limit: int | None) -> AnswerPlan:
    """The answer to ``request``; ``limit`` is its max completion tokens, if any.

    Raises :class:`UnknownToolChoice` when ``tool_choice`` names a missing function.
    """
    seed = answer_seed(request)
    n_prompt = prompt_tokens(request)
    reasoning = (
        behaviour.reasoning_tokens if limit is None else min(behaviour.reasoning_tokens, limit)
    )
    visible = None if limit is None else limit - reasoning
    cached = min(behaviour.cached_prompt_tokens, n_prompt)
    finish = "stop"

    tool = _pick_tool(request, behaviour.tool_use)
    right = book_answer(request, behaviour)
    if right is not None and right.tool is not None:
        choice = request.tool_choice
        forced = choice.function if isinstance(choice, ToolChoiceFunction) else None
        if request.tools and choice != "none" and (forced is None or forced.name == right.tool):
            tool = (right.tool, {})
        else:
            # No tool may be called, or another one must be: the model answers as usual.
            right = None
    elif right is not None:
        # A right text answer: the model answers in words even when a tool is offered.
        tool = None
    if tool is not None and (visible is None or visible >= 1):
        name, parameters = tool
        if right is not None:
            arguments = right.arguments
        else:
            arguments = tool_arguments(parameters, seed)
        fragments = [arguments[i : i + 4] for i in range(0, len(arguments), 4)]
        finish = "tool_calls"
        if visible is not None and 1 + len(fragments) > visible:
            del fragments[visible - 1 :]
            finish = "length"
        pieces, counts = _group(fragments, behaviour.chunks)
        return AnswerPlan(
            pieces=pieces,
            piece_tokens=counts,
            finish_reason=finish,
            prompt_tokens=n_prompt,
            cached_tokens=cached,
            reasoning_tokens=reasoning,
            tool_call=ToolCallPlan(id=_tool_call_id(seed), name=name),
            extra_tokens=1,
        )

    if right is not None:
        words = _TOKEN.findall(right.text)
    elif behaviour.text is not None:
        words = behaviour.text.split()
    else:
        words = answer_words(seed, behaviour.answer_tokens)
    if tool is not None:
        # A tool call with no room for even its first token: an empty, truncated answer.
        words = []
        finish = "length"
    elif visible is not None and len(words) > visible:
        del words[visible:]
        finish = "length"
    if right is not None:
        tokens = words  # whitespace already in place
    else:
        tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    pieces, counts = _group(tokens, behaviour.chunks)
    return AnswerPlan(
        pieces=pieces,
        piece_tokens=counts,
        finish_reason=finish,
        prompt_tokens=n_prompt,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )
