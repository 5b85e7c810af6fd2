"""Deterministic answer checkers: does an answer pass its item's checker?

All but one are pure functions of the answer. ``python_test`` runs the answer's code with the
item's asserts in a fresh interpreter (``python -I``, its own temporary directory, a timeout):
the code is untrusted model output, so run swap evaluations on a machine where that is
acceptable, as with any code-execution benchmark.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
from typing import Any

import anyio
import msgspec

from sidecar._cascade import matches_schema

from ._tasks import (
    Checker,
    ExactChecker,
    JsonChecker,
    NumberChecker,
    PythonTestChecker,
    RegexChecker,
    ToolCallChecker,
)

__all__ = ["Answer", "CheckResult", "ToolCallAnswer", "check"]

PYTHON_TEST_TIMEOUT_S = 10.0

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


class ToolCallAnswer(msgspec.Struct, frozen=True):
    name: str
    arguments: str


class Answer(msgspec.Struct, frozen=True):
    """What a model answered: its text and its tool calls, in order."""

    text: str = ""
    tool_calls: tuple[ToolCallAnswer, ...] = ()


class CheckResult(msgspec.Struct, frozen=True):
    passed: bool
    # Why it failed ("" when it passed).
    reason: str = ""


_PASS = CheckResult(True)


def _fail(reason: str) -> CheckResult:
    return CheckResult(False, reason)


async def check(checker: Checker, answer: Answer) -> CheckResult:
    if isinstance(checker, PythonTestChecker):
        return await _python_test(checker, answer.text)
    return check_pure(checker, answer)


def check_pure(checker: Checker, answer: Answer) -> CheckResult:
    """Every checker but ``python_test``."""
    text = answer.text
    if isinstance(checker, ExactChecker):
        got, want = _trim(text), _trim(checker.expected)
        if not checker.case_sensitive:
            got, want = got.casefold(), want.casefold()
        return _PASS if got == want else _fail(f"expected {checker.expected!r}")
    if isinstance(checker, NumberChecker):
        numbers = _NUMBER.findall(text)
        if not numbers:
            return _fail("no number in the answer")
        value = float(numbers[-1].replace(",", ""))
        if math.isclose(value, checker.value, rel_tol=0, abs_tol=checker.tolerance):
            return _PASS
        return _fail(f"expected {checker.value:g}, got {value:g}")
    if isinstance(checker, RegexChecker):
        found = re.search(checker.pattern, text)
        return _PASS if found else _fail("the answer does not match the expected pattern")
    if isinstance(checker, JsonChecker):
        return _json(checker, text)
    if isinstance(checker, ToolCallChecker):
        return _tool_call(checker, answer.tool_calls)
    raise TypeError(f"no pure check for {type(checker).__name__}")


def _trim(text: str) -> str:
    text = text.strip().strip("\"'`").strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().casefold() == want.strip().casefold()
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float) and isinstance(got, int | float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, dict) and isinstance(got, dict):
        return all(key in got and _same(got[key], value) for key, value in want.items())
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    return bool(got == want)


def _json(checker: JsonChecker, text: str) -> CheckResult:
    fenced = _FENCE.search(text)
    body = fenced.group(2) if fenced else text
    try:
        value = json.loads(body)
    except ValueError:
        return _fail("not valid JSON")
    if not matches_schema(value, checker.schema):
        return _fail("JSON does not match the schema")
    for key, want in checker.equals.items():
        if not isinstance(value, dict) or key not in value or not _same(value[key], want):
            return _fail(f"wrong value for {key!r}")
    return _PASS


def _tool_call(checker: ToolCallChecker, calls: tuple[ToolCallAnswer, ...]) -> CheckResult:
    if not calls:
        return _fail("no tool call")
    call = calls[0]
    if call.name != checker.name:
        return _fail(f"called {call.name!r}, expected {checker.name!r}")
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return _fail("tool arguments are not valid JSON")
    if not isinstance(arguments, dict) or not _same(arguments, checker.arguments):
        return _fail("wrong tool arguments")
    return _PASS


def extract_code(text: str) -> str:
    """The first fenced block (any language), else the whole answer."""
    fenced = _FENCE.search(text)
    return fenced.group(2) if fenced else text


async def _python_test(checker: PythonTestChecker, text: str) -> CheckResult:
    program = extract_code(text) + "\n\n" + checker.test + "\n"
    with tempfile.TemporaryDirectory(prefix="tollgate-eval-") as workdir:
        try:
            with anyio.fail_after(PYTHON_TEST_TIMEOUT_S):
                result = await anyio.run_process(
                    [sys.executable, "-I", "-"],
                    input=program.encode(),
                    cwd=workdir,
                    env={"PATH": "/usr/bin:/bin"},
                    check=False,
                    stderr=subprocess.PIPE,
                )
        except TimeoutError:
            return _fail(f"the tests did not finish within {PYTHON_TEST_TIMEOUT_S:g} s")
    if result.returncode == 0:
        return _PASS
    last = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
    return _fail(f"the tests failed: {last[0][:200]}")
