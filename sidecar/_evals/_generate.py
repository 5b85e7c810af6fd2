"""Generate the labelled task set (``tasks.jsonl``) deterministically.

    python -m sidecar._evals._generate            # rewrite sidecar/_evals/tasks.jsonl
    python -m sidecar._evals._generate --check    # exit 1 if the shipped file differs

Every choice comes from fixed seeds and the hand-written material in ``_corpus``, so the output
is byte-for-byte the same on every run (a test holds the shipped file to that). Each item with a
checker also gets a reference answer, and generation fails unless every reference passes its
checker: the labels are checked before they are shipped.

Declared tasks: within each task type, every tenth item (the tenth, twentieth) declares a
wrong type and three in ten declare none; the rest declare their own type. Items with personal
data declare ``pii`` (an operator's compliance route) and require the ``pii_safe`` tag:
compliance cannot be inferred from content, so a client must say so.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import math
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from sidecar._api import parse_chat_request
from sidecar._estimate import measure_prompt

from . import _corpus as corpus
from ._checkers import Answer, ToolCallAnswer, check_pure, extract_code
from ._tasks import (
    SHIPPED_TASKS,
    Checker,
    Constraints,
    ExactChecker,
    JsonChecker,
    NumberChecker,
    PythonTestChecker,
    Reference,
    RegexChecker,
    TaskItem,
    ToolCallChecker,
)

__all__ = ["generate", "main"]

PII = ["pii_safe"]
# A wrong declared type for each true type: one whose route is clearly not meant for it.
_WRONG = {
    "chat": "code",
    "classify": "chat",
    "code": "chat",
    "extract": "summarize",
    "long_context": "chat",
    "math": "rewrite",
    "reasoning": "chat",
    "rewrite": "summarize",
    "summarize": "rewrite",
    "tools": "chat",
    "vision": "chat",
}


class _Draft(msgspec.Struct, kw_only=True):
    """An item before its id, declared task, size and note are filled in."""

    request: dict[str, Any]
    acceptable: list[str]
    expected_output_tokens: int
    checker: Checker | None = None
    reference: Reference | None = None
    vision: bool = False
    tools: bool = False
    structured_output: bool = False
    pii: bool = False


def _user(text: str, system: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    return {"model": "auto", "messages": messages}


def _exact(
    request: dict[str, Any],
    expected: str,
    acceptable: list[str],
    tokens: int,
    *,
    vision: bool = False,
    pii: bool = False,
) -> _Draft:
    """An item whose answer is exactly ``expected``, which is also its reference."""
    return _Draft(
        request=request,
        acceptable=acceptable,
        expected_output_tokens=tokens,
        checker=ExactChecker(expected=expected),
        reference=Reference(text=expected),
        vision=vision,
        pii=pii,
    )


# --- classify -------------------------------------------------------------------------------


class _Labelling(msgspec.Struct, frozen=True, kw_only=True):
    """Items that ask for one label, one per (text, label) row of ``rows``."""

    rows: Sequence[tuple[str, str]]
    # The user prompt around {text}, and a system prompt.
    prompt: str
    system: str | None = None
    acceptable: list[str]
    pii: bool = False


_LABELLINGS = [
    _Labelling(
        rows=corpus.REVIEWS[:4],
        prompt=(
            "Classify the sentiment of this product review as positive, negative or neutral. "
            "Reply with the label only.\n\nReview: {text}"
        ),
        acceptable=["fast", "open-weight"],
    ),
    _Labelling(
        rows=corpus.REVIEWS[4:],
        prompt=(
            "{text}\n\nWhat is the sentiment of the review above: positive, negative or "
            "neutral? One word."
        ),
        acceptable=["fast", "open-weight"],
    ),
    _Labelling(
        rows=corpus.HEADLINES,
        prompt=(
            "Headline: {text}\n\nWhich category does this headline belong to: sports, "
            "politics, business, technology or health? Reply with one word."
        ),
        system="You sort news headlines into sections.",
        acceptable=["fast", "open-weight"],
    ),
    _Labelling(
        rows=corpus.INTENTS,
        prompt=(
            "Label the intent of this customer message as refund, cancel, upgrade or question. "
            "Reply with the intent only.\n\nMessage: {text}"
        ),
        acceptable=["fast", "open-weight"],
    ),
    _Labelling(
        rows=corpus.TICKETS,
        prompt=(
            "Classify the urgency of this support ticket as low, medium or high. Reply with one "
            "word.\n\n{text}"
        ),
        acceptable=["open-weight"],
        pii=True,
    ),
]


def _classify() -> Iterator[_Draft]:
    for case in _LABELLINGS:
        for text, label in case.rows:
            request = _user(case.prompt.format(text=text), system=case.system)
            yield _exact(request, label, case.acceptable, 2, pii=case.pii)


# --- extract --------------------------------------------------------------------------------


def _schema(properties: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": kind} for name, kind in properties.items()},
        "required": list(properties),
        "additionalProperties": False,
    }


class _Extraction(msgspec.Struct, frozen=True, kw_only=True):
    """Items that ask for the same fields as JSON, one per row of ``rows``."""

    # (text, then each field's value, in the order of ``fields``)
    rows: Sequence[tuple[Any, ...]]
    # Field name -> JSON type: the schema, and the keys of the expected object, in order.
    fields: dict[str, str]
    # The user prompt around {text}, and a system prompt.
    prompt: str
    system: str | None = None
    acceptable: list[str]
    tokens: int
    # A strict JSON schema response format of this name (structured output), else JSON mode
    # with ``json_object``, else only the prompt asks for JSON.
    schema_name: str | None = None
    json_object: bool = False
    pii: bool = False


_EXTRACTIONS = [
    _Extraction(
        rows=corpus.INVOICES,
        fields={"vendor": "string", "total": "number", "currency": "string"},
        prompt="Extract the vendor, the total amount and the currency.\n\n{text}",
        schema_name="invoice",
        acceptable=["fast"],
        tokens=30,
    ),
    _Extraction(
        rows=corpus.CONTACTS,
        fields={"name": "string", "email": "string", "phone": "string"},
        prompt=(
            "Pull out the person's name, email and phone from this signature as a JSON object "
            "with the keys name, email and phone.\n\n{text}"
        ),
        json_object=True,
        acceptable=["fast"],
        tokens=40,
    ),
    _Extraction(
        rows=corpus.ORDERS,
        fields={"order_id": "string", "items": "integer", "city": "string"},
        prompt=(
            "Customer message: {text}\n\nReturn JSON with order_id (string), items (integer) "
            "and city (string). JSON only, no prose."
        ),
        acceptable=["fast"],
        tokens=30,
    ),
    _Extraction(
        rows=corpus.EVENTS,
        fields={"event": "string", "month": "string", "city": "string"},
        prompt="{text}",
        system="Extract the event name, its month and its city.",
        schema_name="event",
        acceptable=["fast"],
        tokens=30,
    ),
    _Extraction(
        rows=corpus.PATIENTS,
        fields={"name": "string", "birth_date": "string", "unit": "string"},
        prompt=(
            "Extract the person's name, birth_date (YYYY-MM-DD) and unit (ward or department) "
            "as a JSON object.\n\n{text}"
        ),
        json_object=True,
        acceptable=["open-weight"],
        tokens=40,
        pii=True,
    ),
]


def _extract() -> Iterator[_Draft]:
    for case in _EXTRACTIONS:
        schema = _schema(case.fields)
        for text, *answer in case.rows:
            values = dict(zip(case.fields, answer, strict=True))
            request = _user(case.prompt.format(text=text), system=case.system)
            if case.schema_name is not None:
                request["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": case.schema_name, "schema": schema, "strict": True},
                }
            elif case.json_object:
                request["response_format"] = {"type": "json_object"}
            yield _Draft(
                request=request,
                acceptable=case.acceptable,
                expected_output_tokens=case.tokens,
                checker=JsonChecker(schema=schema, equals=values),
                reference=Reference(text=msgspec.json.encode(values).decode()),
                structured_output=case.schema_name is not None,
                pii=case.pii,
            )


# --- tools ----------------------------------------------------------------------------------


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
            },
        },
    }


_TOOLS = {
    "get_weather": _tool(
        "get_weather",
        "Current weather for a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    ),
    "search_flights": _tool(
        "search_flights",
        "Search one-way flights.",
        {
            "origin": {"type": "string"},
            "destination": {"type": "string"},
            "date": {"type": "string", "description": "YYYY-MM-DD"},
        },
    ),
    "convert_currency": _tool(
        "convert_currency",
        "Convert an amount between currencies (ISO codes).",
        {"amount": {"type": "number"}, "source": {"type": "string"}, "target": {"type": "string"}},
    ),
    "lookup_order": _tool(
        "lookup_order", "The status of a customer order.", {"order_id": {"type": "string"}}
    ),
    "create_event": _tool(
        "create_event",
        "Add an event to the user's calendar.",
        {
            "title": {"type": "string"},
            "date": {"type": "string", "description": "YYYY-MM-DD"},
            "time": {"type": "string", "description": "HH:MM, 24-hour"},
        },
    ),
}


def _tools() -> Iterator[_Draft]:
    names = sorted(_TOOLS)
    for i, (text, name, arguments) in enumerate(corpus.TOOL_CALLS):
        # The right tool among two others, in a rotating order.
        others = [n for n in names if n != name]
        offered = sorted([name, others[i % 4], others[(i + 1) % 4]], key=lambda n: (i + len(n)) % 7)
        request = _user(text)
        request["tools"] = [_TOOLS[n] for n in offered]
        request["tool_choice"] = "auto"
        yield _Draft(
            request=request,
            acceptable=["fast", "flagship"],
            expected_output_tokens=30,
            checker=ToolCallChecker(name=name, arguments=arguments),
            reference=Reference(tool=name, arguments=arguments),
            tools=True,
        )


# --- code -----------------------------------------------------------------------------------

_BUGS = {
    0: ("kept == kept[::-1]", "kept == kept[1:]"),
    5: ("total -= v", "total += v"),
    9: ("lo = mid + 1", "lo = mid"),
}


def _fenced(code: str) -> str:
    return f"```python\n{code}```"


def _code() -> Iterator[_Draft]:
    for spec, solution, test in corpus.CODE_TASKS:
        yield _Draft(
            request=_user(
                f"Write a Python function {spec}. Reply with the code in one ```python block."
            ),
            acceptable=["flagship"],
            expected_output_tokens=180,
            checker=PythonTestChecker(test=test),
            reference=Reference(text=_fenced(solution)),
        )
    for index, (right, wrong) in _BUGS.items():
        _, solution, test = corpus.CODE_TASKS[index]
        buggy = solution.replace(right, wrong)
        yield _Draft(
            request=_user(
                f"This function has a bug. Fix it and reply with the corrected code only.\n\n"
                f"{_fenced(buggy)}"
            ),
            acceptable=["flagship"],
            expected_output_tokens=150,
            checker=PythonTestChecker(test=test),
            reference=Reference(text=_fenced(solution)),
        )
    yield _Draft(
        request=_user(
            "Explain what this query does, step by step:\n\n```sql\nSELECT c.name, COUNT(o.id) "
            "AS orders\nFROM customers c\nLEFT JOIN orders o ON o.customer_id = c.id\n"
            "GROUP BY c.name\nHAVING COUNT(o.id) > 5;\n```"
        ),
        acceptable=["flagship"],
        expected_output_tokens=200,
    )
    yield _Draft(
        request=_user(
            "Review this TypeScript for problems:\n\n```ts\nfunction total(xs: number[]) {\n"
            "  let t;\n  for (const x of xs) t += x;\n  return t;\n}\n```"
        ),
        acceptable=["flagship"],
        expected_output_tokens=200,
    )


# --- math -----------------------------------------------------------------------------------


def _number(
    text: str, value: float, acceptable: list[str], tokens: int, tolerance: float = 1e-6
) -> _Draft:
    """A question whose answer is the number ``value``, within ``tolerance``."""
    answer = f"{value:g}" if value != int(value) else str(int(value))
    return _Draft(
        request=_user(text),
        acceptable=acceptable,
        expected_output_tokens=tokens,
        checker=NumberChecker(value=value, tolerance=tolerance),
        reference=Reference(text=answer),
    )


def _math(rng: random.Random) -> Iterator[_Draft]:
    simple: list[tuple[str, float]] = []
    for _ in range(2):
        speed, hours = rng.randint(12, 30), rng.randint(2, 5)
        simple.append(
            (
                f"A cyclist rides {speed * hours} km in {hours} hours at a steady pace. What is "
                "the speed in km/h? Answer with the number only.",
                speed,
            )
        )
        share, base = rng.choice([5, 12, 15, 20, 35]), rng.randint(4, 40) * 20
        simple.append(
            (f"What is {share}% of {base}? Answer with the number only.", share * base / 100)
        )
        a, x, b = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 30)
        simple.append((f"Solve for x: {a}x + {b} = {a * x + b}. Reply with x only.", x))
        count, price, more = rng.randint(3, 6), rng.randint(2, 9), rng.randint(7, 12)
        simple.append(
            (
                f"{count} notebooks cost ${count * price}. At the same price each, how much do "
                f"{more} notebooks cost in dollars? Answer with the number only.",
                more * price,
            )
        )
        width, length = rng.randint(3, 15), rng.randint(4, 20)
        simple.append(
            (
                f"A garden is {width} m wide and {length} m long. What is its area in square "
                "metres? Answer with the number only.",
                width * length,
            )
        )
        n = rng.randint(20, 120)
        simple.append((f"What is the sum of the integers from 1 to {n}?", n * (n + 1) // 2))
        dividend, divisor = rng.randint(100, 999), rng.randint(7, 23)
        simple.append(
            (f"What is the remainder when {dividend} is divided by {divisor}?", dividend % divisor)
        )
        values = [rng.randint(10, 99) for _ in range(4)]
        simple.append(
            (
                f"The scores were {', '.join(map(str, values))}. What is the average score? "
                "Answer with the number only.",
                sum(values) / 4,
            )
        )
    for text, value in simple:
        yield _number(text, value, ["fast", "flagship"], 8)
    for _ in range(2):
        n, k = rng.randint(6, 12), rng.randint(2, 4)
        yield _number(
            f"How many different teams of {k} can be chosen from {n} people? Give the number.",
            math.comb(n, k),
            ["flagship", "reasoning"],
            60,
        )
        red, blue = rng.randint(2, 9), rng.randint(2, 9)
        p = (red / (red + blue)) * ((red - 1) / (red + blue - 1))
        yield _number(
            f"A bag holds {red} red and {blue} blue marbles. Two are drawn without replacement. "
            "What is the probability that both are red? Give a decimal rounded to 4 places.",
            round(p, 4),
            ["flagship", "reasoning"],
            80,
            tolerance=0.001,
        )


# --- summarize ------------------------------------------------------------------------------


def _article(rng: random.Random, key: str, support: list[str]) -> str:
    sentences = list(support)
    rng.shuffle(sentences)
    return " ".join([key, *sentences])


def _summarize(rng: random.Random) -> Iterator[_Draft]:
    for entity, key, support in corpus.STORIES[:9]:
        article = _article(rng, key, support)
        pattern = rf"(?is)^(?=.*\b{entity}\b).{{20,400}}$"
        yield _Draft(
            request=_user(f"Summarize the following article in one sentence.\n\n{article}"),
            acceptable=["fast"],
            expected_output_tokens=40,
            checker=RegexChecker(pattern=pattern),
            reference=Reference(text=key),
        )
        bullets = "\n".join(f"- {s}" for s in [key, *support[:2]])
        yield _Draft(
            request=_user(
                f"{article}\n\nGive me the key points of this news item as three short bullets "
                "starting with '- '."
            ),
            acceptable=["fast"],
            expected_output_tokens=60,
            checker=RegexChecker(pattern=rf"(?ms)(?=.*\b{entity}\b)^- .*^- .*^- "),
            reference=Reference(text=bullets),
        )
    memos = [
        ("Jonas Weber", "Jonas Weber (employee 5521, jonas.weber@example.com) will be on medical "
         "leave from 3 to 28 November after surgery. His payroll continues as normal. Ana Silva "
         "covers his accounts; clients should be told only that he is away."),
        ("Grace Liu", "Performance review, confidential: Grace Liu (grace.liu@example.com, phone "
         "+1 212 555 0188) exceeded her sales targets by 20% and is recommended for promotion to "
         "team lead in January. Her salary band changes from B2 to B3."),
    ]  # fmt: skip
    for name, memo in memos:
        yield _Draft(
            request=_user(f"Summarize this HR memo in two sentences.\n\n{memo}"),
            acceptable=["open-weight"],
            expected_output_tokens=50,
            checker=RegexChecker(pattern=rf"(?is)^(?=.*\b{name.split()[0]}\b).{{20,400}}$"),
            reference=Reference(text=memo.split(". ")[0] + "."),
            pii=True,
        )


# --- rewrite --------------------------------------------------------------------------------


def _rewrite() -> Iterator[_Draft]:
    for instruction, source, reference, pattern in corpus.REWRITES:
        yield _Draft(
            request=_user(f'{instruction}\n\n"{source}"'),
            acceptable=["fast"],
            expected_output_tokens=30,
            checker=RegexChecker(pattern=pattern),
            reference=Reference(text=reference),
        )


# --- long context ---------------------------------------------------------------------------

_LONG_SIZES = [3500, 4000, 4500, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 14000, 36000]


def _document(rng: random.Random, tokens: int, needle: str) -> str:
    """Filler sentences up to ~``tokens`` estimated tokens, the needle about two-thirds in."""
    target = tokens * 3  # the estimate counts a token per 3 bytes
    sentences: list[str] = []
    size = 0
    while size < target:
        sentence = rng.choice(corpus.FILLER).format(
            team=rng.choice(corpus.TEAMS),
            site=rng.choice(corpus.SITES),
            thing=rng.choice(corpus.THINGS),
            day=rng.choice(corpus.DAYS),
            person=rng.choice(corpus.PEOPLE),
            colour=rng.choice(corpus.COLOURS),
        )
        sentences.append(sentence)
        size += len(sentence) + 1
    sentences.insert(len(sentences) * 2 // 3, needle)
    paragraphs = [" ".join(sentences[i : i + 6]) for i in range(0, len(sentences), 6)]
    return "\n\n".join(paragraphs)


def _long_context(rng: random.Random) -> Iterator[_Draft]:
    for i, tokens in enumerate(_LONG_SIZES):
        fact, question = corpus.NEEDLES[i % len(corpus.NEEDLES)]
        site = f"{rng.choice(['North', 'South', 'East', 'West'])} {rng.choice(corpus.SITES)}"
        code = str(rng.randint(1000, 9999))
        person = rng.choice(["Adele Fontaine", "Boris Kovac", "Chiara Russo", "Dev Patel"])
        values = {"site": site, "code": code, "person": person}
        answer = person if "{person}" in fact else code
        document = _document(rng, tokens, fact.format(**values))
        acceptable = ["long-context", "flagship"] + (["fast"] if tokens <= 6000 else [])
        yield _exact(_user(f"{document}\n\n{question.format(**values)}"), answer, acceptable, 6)


# --- vision ---------------------------------------------------------------------------------

_RGB = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (250, 220, 0),
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "orange": (255, 140, 0),
    "purple": (128, 0, 160),
}


def _png(left: tuple[int, int, int], right: tuple[int, int, int], size: int = 16) -> str:
    """A size x size PNG, ``left`` on the left half and ``right`` on the right, as a data URL."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(left) * (size // 2) + bytes(right) * (size - size // 2)
    raw = row * size
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _image_request(text: str, url: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }


def _vision(rng: random.Random) -> Iterator[_Draft]:
    colours = sorted(_RGB)
    acceptable = ["fast", "flagship"]
    for colour in colours + colours[:4]:
        question = "What colour is this picture? Reply with one word."
        request = _image_request(question, _png(_RGB[colour], _RGB[colour]))
        yield _exact(request, colour, acceptable, 2, vision=True)
    for _ in range(8):
        left, right = rng.sample(colours, 2)
        side, answer = rng.choice([("left", left), ("right", right)])
        question = f"Which colour fills the {side} half of this image? Reply with one word."
        request = _image_request(question, _png(_RGB[left], _RGB[right]))
        yield _exact(request, answer, acceptable, 2, vision=True)


# --- reasoning ------------------------------------------------------------------------------

_ORDINALS = ["first", "second", "third", "fourth"]
_RUNNERS = ["Anna", "Bilal", "Chen", "Dora", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jana"]


def _ordering(rng: random.Random) -> tuple[str, str]:
    """A race-order puzzle with exactly one solution, and the asked-for runner."""
    names = rng.sample(_RUNNERS, 4)
    truth = names[:]
    rng.shuffle(truth)
    place = {n: i for i, n in enumerate(truth)}

    def clue() -> tuple[str, Callable[[dict[str, int]], bool]]:
        a, b = rng.sample(names, 2)
        kind = rng.randrange(3)
        if kind == 0:
            if place[a] > place[b]:
                a, b = b, a
            return f"{a} finished ahead of {b}.", lambda p: p[a] < p[b]
        if kind == 1:
            # a did not finish where b did (true, as a != b).
            spot = place[b]
            return f"{a} was not {_ORDINALS[spot]}.", lambda q: q[a] != spot
        gap = abs(place[a] - place[b])
        text = (
            f"{a} and {b} crossed the line one right after the other."
            if gap == 1
            else f"Exactly {gap - 1} runner{'s' if gap > 2 else ''} finished between {a} and {b}."
        )
        return text, lambda q: abs(q[a] - q[b]) == gap

    clues: list[tuple[str, Callable[[dict[str, int]], bool]]] = []
    while True:
        text, test = clue()
        if text and text not in [c[0] for c in clues]:
            clues.append((text, test))
        solutions = [
            perm
            for perm in itertools.permutations(names)
            if all(t({n: i for i, n in enumerate(perm)}) for _, t in clues)
        ]
        if len(solutions) == 1:
            break
    asked = rng.randrange(4)
    text = (
        f"Four runners, {', '.join(names[:3])} and {names[3]}, finished a race with no ties. "
        + " ".join(c[0] for c in clues)
        + f" Who finished {_ORDINALS[asked]}? Work it out carefully, then give the name alone "
        "on the last line."
    )
    return text, truth[asked]


def _knights(rng: random.Random) -> tuple[str, str]:
    """A knights-and-knaves puzzle with exactly one solution, and the asked-about answer."""
    names = rng.sample(["Ada", "Ben", "Cal", "Dee", "Eve", "Fox"], 3)

    def statement(speaker: str) -> tuple[str, Callable[[dict[str, bool]], bool]]:
        # About the others: a speaker calling themself a knight or a knave says nothing.
        a, b = rng.sample([n for n in names if n != speaker], 2)
        kind = rng.randrange(4)
        if kind == 0:
            return f"{b} is a knave.", lambda k: not k[b]
        if kind == 1:
            return f"{b} is a knight.", lambda k: k[b]
        if kind == 2:
            return f"{a} and {b} are the same kind.", lambda k: k[a] == k[b]
        return "Exactly one of us three is a knight.", lambda k: sum(k.values()) == 1

    while True:
        said = {n: statement(n) for n in names}
        solutions = [
            k
            for values in itertools.product([True, False], repeat=3)
            for k in [dict(zip(names, values, strict=True))]
            if all(said[n][1](k) == k[n] for n in names)
        ]
        if len(solutions) == 1:
            break
    asked = rng.choice(names)
    lines = " ".join(f'{n} says: "{said[n][0]}"' for n in names)
    text = (
        "On an island, knights always tell the truth and knaves always lie. You meet "
        f"{', '.join(names[:2])} and {names[2]}. {lines} Is {asked} a knight or a knave? "
        "Reason it through, then give one word on the last line."
    )
    return text, "knight" if solutions[0][asked] else "knave"


def _reasoning(rng: random.Random) -> Iterator[_Draft]:
    for make in [_ordering] * 10 + [_knights] * 10:
        text, answer = make(rng)
        yield _Draft(
            request=_user(text),
            acceptable=["reasoning"],
            expected_output_tokens=120,
            checker=RegexChecker(pattern=rf"(?i)\b{answer}\b[\s.*!]*\Z"),
            reference=Reference(text=answer),
        )


# --- chat -----------------------------------------------------------------------------------


def _chat() -> Iterator[_Draft]:
    for turns in corpus.CHATS:
        yield _Draft(
            request={
                "model": "auto",
                "messages": [{"role": role, "content": text} for role, text in turns],
            },
            acceptable=["fast"],
            expected_output_tokens=150,
        )


# --- assembly -------------------------------------------------------------------------------


def _declared(task: str, index: int, pii: bool) -> str | None:
    if pii:
        return "pii"
    if index % 10 == 9:
        return _WRONG[task]
    if index % 10 in (1, 4, 6):
        return None
    return task


def _finish(task: str, index: int, draft: _Draft) -> TaskItem:
    parsed, _ = parse_chat_request(msgspec.json.encode(draft.request))
    size = measure_prompt(parsed.messages, parsed.tools)
    declared = _declared(task, index, draft.pii)
    note = ""
    if draft.pii:
        note = "personal data: must stay on a pii_safe model"
    elif declared is not None and declared != task:
        note = f"deliberately mistyped as {declared}"
    return TaskItem(
        id=f"{task}-{index + 1:02d}",
        task_type=task,
        declared=declared,
        request=draft.request,
        constraints=Constraints(
            context_tokens=size.estimated_tokens,
            vision=draft.vision,
            tools=draft.tools,
            structured_output=draft.structured_output,
            compliance=PII if draft.pii else [],
        ),
        acceptable=draft.acceptable,
        expected_output_tokens=draft.expected_output_tokens,
        checker=draft.checker,
        reference=draft.reference,
        note=note,
    )


def generate() -> list[TaskItem]:
    """The task set, in a fixed order (by task type, then index)."""
    builders: dict[str, Callable[[random.Random], Iterator[_Draft]]] = {
        "chat": lambda _: _chat(),
        "classify": lambda _: _classify(),
        "code": lambda _: _code(),
        "extract": lambda _: _extract(),
        "long_context": _long_context,
        "math": _math,
        "reasoning": _reasoning,
        "rewrite": lambda _: _rewrite(),
        "summarize": _summarize,
        "tools": lambda _: _tools(),
        "vision": _vision,
    }
    items: list[TaskItem] = []
    for number, (task, build) in enumerate(sorted(builders.items())):
        rng = random.Random(20261108 + number)
        items += [_finish(task, i, draft) for i, draft in enumerate(build(rng))]
    return items


def _reference_answer(reference: Reference) -> Answer:
    if reference.tool is not None:
        arguments = msgspec.json.encode(reference.arguments).decode()
        return Answer(tool_calls=(ToolCallAnswer(reference.tool, arguments),))
    return Answer(text=reference.text)


def verify(items: list[TaskItem]) -> list[str]:
    """Problems with the references: each one must pass its item's checker."""
    problems: list[str] = []
    for item in items:
        if item.checker is None:
            continue
        if item.reference is None:
            problems.append(f"{item.id}: a checker without a reference answer")
            continue
        answer = _reference_answer(item.reference)
        if isinstance(item.checker, PythonTestChecker):
            program = extract_code(answer.text) + "\n\n" + item.checker.test + "\n"
            with tempfile.TemporaryDirectory() as workdir:
                run = subprocess.run(
                    [sys.executable, "-I", "-"],
                    input=program.encode(),
                    cwd=workdir,
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
            if run.returncode != 0:
                problems.append(f"{item.id}: the reference fails its tests")
        else:
            result = check_pure(item.checker, answer)
            if not result.passed:
                problems.append(f"{item.id}: the reference fails its checker ({result.reason})")
    return problems


def render(items: list[TaskItem]) -> bytes:
    return b"".join(msgspec.json.encode(item) + b"\n" for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped file")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name(SHIPPED_TASKS))
    args = parser.parse_args(argv)
    items = generate()
    problems = verify(items)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    data = render(items)
    if args.check:
        same = args.output.exists() and args.output.read_bytes() == data
        print(f"{args.output}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    args.output.write_bytes(data)
    print(f"wrote {len(items)} items to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
