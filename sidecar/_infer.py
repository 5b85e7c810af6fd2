"""Task inference: a light, pure classifier of a request's task type from its content.

The router uses it for requests that name no task (they take the inferred task's route when the
config has one, instead of the default route), and the executor logs ``TaskMistyped`` when a
declared task looks wrong. It reads only the request (no I/O, no clock, no model), so it is
cheap enough for every request and replays exactly.

Each task type collects points from features of the request; the type with the most points
wins, ties going to the earlier type in ``TASK_TYPES``, and a request with no feature at all is
``chat``. Hard features (an image, tools offered, a requested JSON format, a code fence, a long
prompt) weigh more than cue words. Cue words are looked for in the system prompt and at both
ends of the last user message (where instructions sit, also around a long document), so the
cost does not grow with the prompt.

Vocabulary (also the route names inference can pick): ``chat``, ``classify``, ``code``,
``extract``, ``long_context``, ``math``, ``reasoning``, ``rewrite``, ``summarize``, ``tools``,
``vision``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from adapters import ImagePart, TextPart

from ._api import ChatCompletionRequest
from ._router import AUTO_SELECTORS, TASK_PREFIX, RouteQuery

__all__ = [
    "TASK_TYPES",
    "Inference",
    "infer_task",
    "looks_mistyped",
    "route_query",
]

# In tie-breaking order: the hardest evidence first.
TASK_TYPES = (
    "vision",
    "tools",
    "code",
    "extract",
    "long_context",
    "math",
    "reasoning",
    "summarize",
    "rewrite",
    "classify",
    "chat",
)

# Characters read at each end of the last user message, and of the system prompt.
_WINDOW = 2_000
# Estimated prompt tokens from which a prompt reads as a long document.
LONG_TOKENS = 3_000
VERY_LONG_TOKENS = 8_000
# A confident inference: at least this many points, and this lead over the runner-up.
_CONFIDENT_POINTS = 5
_CONFIDENT_LEAD = 2
# Declared types that an inference of the other one does not contradict.
_COMPATIBLE = frozenset(
    {
        frozenset({"math", "reasoning"}),
        frozenset({"summarize", "long_context"}),
        frozenset({"extract", "long_context"}),
        frozenset({"classify", "extract"}),
    }
)


def _words(*phrases: str) -> str:
    return "|".join(phrases)


# (task, signal name, points, phrases) over the lower-cased instruction text.
_CUES: tuple[tuple[str, str, int, str], ...] = (
    (
        "code",
        "cue:code",
        3,
        _words(
            r"write (?:a|an|the) (?:python |javascript |typescript |go |rust |sql |bash )?"
            r"(?:function|class|method|script|query|program|regex|regular expression)",
            "implement",
            "refactor",
            "unit tests?",
            "stack trace",
            "traceback",
            "compile[sd]?",
            "this (?:code|function|snippet|query)",
            "python",
            "javascript",
            "typescript",
            "golang",
            "rust",
            "sql",
            "bash",
            "fix (?:the|this) bug",
        ),
    ),
    (
        "extract",
        "cue:extract",
        3,
        _words(
            r"extract",
            r"pull out",
            r"parse",
            r"as json",
            r"json object",
            r"return (?:only )?json",
            r"fields?",
        ),
    ),
    (
        "math",
        "cue:math",
        3,
        _words(
            "solve",
            "calculate",
            "compute",
            "how many",
            "how much",
            "equation",
            "integral",
            "derivative",
            "probability",
            "percent(?:age)?",
            "sum of",
            "product of",
            "average",
            "remainder",
            "square root",
            "area",
            "perimeter",
            "volume",
            "speed",
            "ratio",
            "fraction",
            "divided by",
            "multiplied by",
            r"answer with (?:the|a) number",
            r"give (?:the|a) number",
            r"what is \d+",
        ),
    ),
    (
        "reasoning",
        "cue:reasoning",
        5,
        _words(
            "prove",
            "proof",
            "puzzle",
            "riddle",
            "logic puzzle",
            "deduce",
            "must be true",
            "knights?",
            "knaves?",
            "liars?",
            "truth-tellers?",
            "who is lying",
            "think (?:it through|carefully)",
            "reason (?:it through|carefully)",
            "work (?:it|this) out",
            "figure (?:it|this) out",
        ),
    ),
    (
        "summarize",
        "cue:summarize",
        5,
        _words(
            "summari[sz]e",
            "summary",
            "tl;?dr",
            "key points",
            "main points",
            "condense",
            "gist",
            "recap",
        ),
    ),
    (
        "rewrite",
        "cue:rewrite",
        5,
        _words(
            "rewrite",
            "re-write",
            "rephrase",
            "paraphrase",
            "reword",
            "proofread",
            "fix (?:the|its|my) (?:grammar|spelling|typos)",
            "correct (?:the|its|my) (?:grammar|spelling)",
            "more (?:formal|polite|concise|casual|friendly)",
            "translate",
            "polish",
            "shorten",
        ),
    ),
    (
        "classify",
        "cue:classify",
        5,
        _words(
            "classify",
            "categori[sz]e",
            "sentiment",
            "which category",
            "label (?:it|this|the)",
            "is (?:this|it) spam",
            "intent",
            "one of the following (?:labels|categories)",
        ),
    ),
)
# All cue phrases in one pass (one named group per task): about twice as fast as a search
# per task, and the text is read once whatever the number of cues.
_CUE_PATTERN = re.compile(
    r"\b(?:" + "|".join(f"(?P<{task}>{phrases})" for task, _, _, phrases in _CUES) + r")\b"
)
_CUE_POINTS = {task: (signal, points) for task, signal, points, _ in _CUES}
_FENCE = re.compile(r"```")
_CODE_SYNTAX = re.compile(
    r"(?m)^\s*(?:def \w+\(|class \w+[(:]|import \w+|from \w+ import|#include\b|"
    r"(?:public|private) (?:static )?\w+|func \w+\(|fn \w+\(|const \w+ = |let \w+ = |"
    r"SELECT\b.*\bFROM\b|function \w*\()"
)
_PERCENT = re.compile(r"\d\s*%")
_ARITHMETIC = re.compile(r"\d\s*(?:[-+*/\u00d7\u00f7^=]|\*\*)\s*\(?\d")
_MATH_SYMBOLS = re.compile(r"[√∫∑π²³≤≥≠]")
_QUESTION = re.compile(
    r"\?|\b(?:according to|based on|in the (?:text|document|report|passage|contract)|"
    r"find the|what does the)\b"
)
_JSON_WORD = re.compile(r"\bjson\b")


class Inference(msgspec.Struct, frozen=True):
    task: str
    # The features that decided it, e.g. ("code_fence", "cue:code").
    signals: tuple[str, ...]
    # Points per task type with any (types with none are left out).
    scores: Mapping[str, int]

    @property
    def confident(self) -> bool:
        """Clear evidence: enough points and a clear lead over the runner-up."""
        top = self.scores.get(self.task, 0)
        others = [v for k, v in self.scores.items() if k != self.task]
        return top >= _CONFIDENT_POINTS and top - max(others, default=0) >= _CONFIDENT_LEAD


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.text for part in content if isinstance(part, TextPart))
    return ""


def _ends(text: str) -> str:
    if len(text) <= 2 * _WINDOW:
        return text
    return text[:_WINDOW] + "\n" + text[-_WINDOW:]


def infer_task(request: ChatCompletionRequest, input_tokens: int) -> Inference:
    """The request's most likely task type; ``input_tokens`` is the prompt's estimate."""
    scores: dict[str, int] = {}
    signals: dict[str, list[str]] = {}

    def add(task: str, signal: str, points: int) -> None:
        scores[task] = scores.get(task, 0) + points
        signals.setdefault(task, []).append(signal)

    system = ""
    last_user = ""
    images = False
    for message in request.messages:
        content = message.content
        if isinstance(content, list) and any(isinstance(p, ImagePart) for p in content):
            images = True
        if message.role in ("system", "developer"):
            system = _ends(_text_of(content))
        elif message.role == "user":
            last_user = _text_of(content)
    instruction = _ends(last_user)
    cue_text = (system + "\n" + instruction).lower()

    if images:
        add("vision", "image", 10)
    if request.tools:
        add("tools", "tools", 10)
    fmt = (request.response_format or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        add("extract", f"response_format:{fmt}", 6)
    elif _JSON_WORD.search(cue_text):
        add("extract", "json_requested", 2)
    if _FENCE.search(instruction) or _FENCE.search(system):
        add("code", "code_fence", 4)
    if _CODE_SYNTAX.search(instruction):
        add("code", "code_syntax", 3)
    if input_tokens >= LONG_TOKENS:
        long_points = 6 if input_tokens >= VERY_LONG_TOKENS else 4
        add("long_context", "long_prompt", long_points)
        if _QUESTION.search(instruction.lower()):
            add("long_context", "question_about_document", 2)
    cued = {match.lastgroup for match in _CUE_PATTERN.finditer(cue_text)}
    for task, (signal, points) in _CUE_POINTS.items():
        if task in cued:
            add(task, signal, points)
    if _ARITHMETIC.search(instruction):
        add("math", "arithmetic", 2)
    if _PERCENT.search(instruction):
        add("math", "percent_sign", 2)
    if _MATH_SYMBOLS.search(instruction):
        add("math", "math_symbols", 1)

    if not scores:
        return Inference("chat", (), {})
    best = max(TASK_TYPES, key=lambda t: (scores.get(t, 0), -TASK_TYPES.index(t)))
    return Inference(best, tuple(signals[best]), scores)


def looks_mistyped(declared: str, inference: Inference) -> bool:
    """Whether the declared task type contradicts the content: the inference is confident,
    names another type not compatible with it, and found next to no evidence for it. Declared
    names outside the vocabulary (an operator's own routes, e.g. ``pii``) are never judged."""
    if declared not in TASK_TYPES or declared == inference.task or not inference.confident:
        return False
    if frozenset({declared, inference.task}) in _COMPATIBLE:
        return False
    return inference.scores.get(declared, 0) < _CONFIDENT_POINTS - 2


def route_query(
    request: ChatCompletionRequest, task: str | None, input_tokens: int
) -> tuple[RouteQuery, Inference | None]:
    """The router's query for a request, with the inferred task when routing by task (an
    untagged request routes by it; a tagged one is checked against it). Requests naming a
    class or a model are not inferred: the client chose."""
    selector = request.model
    by_task = selector.startswith(TASK_PREFIX)
    declared = selector[len(TASK_PREFIX) :] if by_task else task
    # A declared name outside the vocabulary (an operator's own route) is never judged, so
    # there is nothing to infer for it.
    inference = (
        infer_task(request, input_tokens)
        if (by_task or selector in AUTO_SELECTORS) and (not declared or declared in TASK_TYPES)
        else None
    )
    query = RouteQuery(
        selector=selector,
        task=task,
        input_tokens=input_tokens,
        max_tokens=request.output_limit,
        needs=request.needs(),
        # Without any evidence ("chat" by default) there is nothing to route by: the request
        # takes the default route, and TaskUnrouted says so.
        inferred_task=inference.task if inference is not None and inference.signals else None,
    )
    return query, inference
