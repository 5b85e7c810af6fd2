"""The labelled task set: its schema, and loading it (the shipped set or a file).

One JSON object per line. Each item is a request as a client sends it (the OpenAI Chat
Completions shape, ``"model": "auto"``) with what is known about it: its true task type, the
task it declares (missing or deliberately wrong in some items), the constraints any model that
serves it must meet, the model classes that are right for it, and, where the answer can be
judged mechanically, a checker and a reference answer that passes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

__all__ = [
    "SHIPPED_TASKS",
    "Checker",
    "Constraints",
    "ExactChecker",
    "JsonChecker",
    "NumberChecker",
    "PythonTestChecker",
    "Reference",
    "RegexChecker",
    "TaskItem",
    "TaskSetError",
    "ToolCallChecker",
    "load_tasks",
    "tasks_digest",
]

SHIPPED_TASKS = "tasks.jsonl"


class TaskSetError(Exception):
    """The task set cannot be read; the message names the line and the problem."""


class _Strict(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Constraints(_Strict, frozen=True, omit_defaults=True):
    """What any model that serves the item must meet (hard constraints)."""

    # The prompt's estimated input tokens (tollgate's own estimate); the model's context window
    # must hold them and the expected answer.
    context_tokens: int
    vision: bool = False
    tools: bool = False
    # A JSON schema answer format, which needs native structured output.
    structured_output: bool = False
    # Tags the model must carry, e.g. ["pii_safe"].
    compliance: list[str] = []


class _CheckerBase(_Strict, frozen=True, tag_field="kind"):
    pass


class ExactChecker(_CheckerBase, frozen=True, tag="exact"):
    """The answer, trimmed of whitespace, quotes and a final full stop, equals ``expected``
    (ignoring case unless ``case_sensitive``)."""

    expected: str
    case_sensitive: bool = False


class NumberChecker(_CheckerBase, frozen=True, tag="number"):
    """The last number in the answer is ``value`` (within ``tolerance``)."""

    value: float
    tolerance: float = 1e-6


class RegexChecker(_CheckerBase, frozen=True, tag="regex"):
    """``pattern`` (Python syntax; flags inline) is found in the answer."""

    pattern: str


class JsonChecker(_CheckerBase, frozen=True, tag="json"):
    """The answer (a fenced block allowed) is JSON matching ``schema``, and each key of
    ``equals`` has that value (strings compared ignoring case and surrounding spaces)."""

    schema: dict[str, Any]
    equals: dict[str, Any] = {}


class ToolCallChecker(_CheckerBase, frozen=True, tag="tool_call"):
    """The answer's first tool call is to ``name``, with at least ``arguments`` (strings
    compared ignoring case)."""

    name: str
    arguments: dict[str, Any] = {}


class PythonTestChecker(_CheckerBase, frozen=True, tag="python_test"):
    """The answer's Python code (its first fenced block, else all of it), followed by
    ``test`` (plain asserts), runs to completion in a fresh interpreter."""

    test: str


Checker: TypeAlias = (
    ExactChecker | NumberChecker | RegexChecker | JsonChecker | ToolCallChecker | PythonTestChecker
)


class Reference(_Strict, frozen=True, omit_defaults=True):
    """A right answer: a text, or one tool call. The fakes' answer books are made of these."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] = {}


class TaskItem(_Strict, frozen=True, omit_defaults=True):
    id: str
    # The true task type (the label).
    task_type: str
    # The request itself, as a client sends it.
    request: dict[str, Any]
    constraints: Constraints
    # The model classes that are right for it: weaker ones risk quality, stronger ones waste
    # money.
    acceptable: list[str]
    # About how many tokens a right answer takes (for cost estimates).
    expected_output_tokens: int
    # The task the request declares (header or metadata); None: untagged. It may be wrong.
    declared: str | None = None
    checker: Checker | None = None
    reference: Reference | None = None
    note: str = ""


_decoder = msgspec.json.Decoder(TaskItem)


def load_tasks(path: str | Path | None = None) -> list[TaskItem]:
    """The items of ``path`` (JSONL), or of the shipped set. Raises :class:`TaskSetError`."""
    if path is None:
        data = resources.files(__package__).joinpath(SHIPPED_TASKS).read_bytes()
        source = f"<shipped {SHIPPED_TASKS}>"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TaskSetError(f"{path}: cannot read the task set: {exc.strerror}") from exc
        source = str(path)
    return parse_tasks(data, source)


def parse_tasks(data: bytes, source: str = "<tasks>") -> list[TaskItem]:
    items: list[TaskItem] = []
    seen: set[str] = set()
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = _decoder.decode(line)
        except msgspec.MsgspecError as exc:
            raise TaskSetError(f"{source}:{number}: {exc}") from exc
        if item.id in seen:
            raise TaskSetError(f"{source}:{number}: duplicate id {item.id!r}")
        if not item.acceptable:
            raise TaskSetError(f"{source}:{number}: {item.id}: acceptable must not be empty")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise TaskSetError(f"{source}: no items")
    return items


def tasks_digest(items: Sequence[TaskItem]) -> str:
    """A short digest of the items, for reports: two runs on the same set show the same one."""
    encoded = msgspec.json.encode(list(items), order="sorted")
    return hashlib.sha256(encoded).hexdigest()[:16]
