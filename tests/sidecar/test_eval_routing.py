"""``tollgate eval routing``: the shipped config on the shipped task set, and the gate itself.

Also the task set's own guarantees: generated reproducibly, labelled, every reference answer
passing its checker.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar._cli import main
from sidecar._evals._checkers import Answer, ToolCallAnswer, check, check_pure
from sidecar._evals._generate import generate, render, verify
from sidecar._evals._tasks import (
    SHIPPED_TASKS,
    ExactChecker,
    JsonChecker,
    NumberChecker,
    PythonTestChecker,
    RegexChecker,
    TaskSetError,
    ToolCallChecker,
    load_tasks,
    parse_tasks,
)
from sidecar._infer import TASK_TYPES

ROOT = Path(__file__).parents[2]
SHIPPED_CONFIG = ROOT / "deploy" / "tollgate.example.toml"
SHIPPED_SET = ROOT / "sidecar" / "_evals" / SHIPPED_TASKS


def run_routing(tmp_path: Path, name: str, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / name
    code = main(["eval", "routing", "--out", str(out), "--prices-at", "2026-11-01", *args])
    report = json.loads((out / "routing.json").read_text())
    return code, report, (out / "routing.md").read_text()


def test_the_shipped_config_routes_the_shipped_set_without_violations(tmp_path: Path) -> None:
    code, report, markdown = run_routing(
        tmp_path, "a", "--config", str(SHIPPED_CONFIG), "--min-accuracy", "0.9"
    )
    assert code == 0
    overall = report["overall"]
    assert overall["violations"] == 0
    assert overall["items"] >= 200
    assert overall["accuracy"] >= 0.9
    assert overall["no_route"] == 0
    # Routing saves money against sending everything to the flagship.
    assert 0 < overall["cost_usd"] < overall["flagship_cost_usd"]
    # Every task type of the set is routed, each on the whole without violations.
    assert set(report["by_type"]) == set(TASK_TYPES)
    assert all(s["violations"] == 0 for s in report["by_type"].values())
    # The mistyped items are reported, and most of them caught.
    assert overall["declared_wrong"] > 0
    assert overall["mistyped_caught"] >= overall["declared_wrong"] // 2
    assert "## Hard-constraint violations\n\nNone." in markdown
    assert report["run"]["strength_basis"] == "tier"


def test_the_report_is_the_same_run_to_run(tmp_path: Path) -> None:
    args = ("--config", str(SHIPPED_CONFIG))
    run_routing(tmp_path, "a", *args)
    run_routing(tmp_path, "b", *args)
    for name in ("routing.json", "routing.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    text = (tmp_path / "a" / "routing.json").read_text()
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_violations_fail_the_run(tmp_path: Path) -> None:
    # Personal data sent to a class whose models lack the pii_safe tag.
    config = SHIPPED_CONFIG.read_text().replace(
        '[routes.pii]\nclass = "open-weight"\nrequire_tags = ["pii_safe"]',
        '[routes.pii]\nclass = "fast"',
    )
    assert config != SHIPPED_CONFIG.read_text()
    path = tmp_path / "leaky.toml"
    path.write_text(config)
    code, report, markdown = run_routing(tmp_path, "leaky", "--config", str(path))
    assert code == 1
    leaks = [i for i in report["items"] if i["violations"]]
    assert leaks and all("lacks tag pii_safe" in v for i in leaks for v in i["violations"])
    assert {i["id"] for i in leaks} == {
        i.id for i in load_tasks() if "pii_safe" in i.constraints.compliance
    }
    assert "lacks tag pii_safe" in markdown


def test_accuracy_below_the_threshold_fails_the_run(tmp_path: Path) -> None:
    code, report, _ = run_routing(
        tmp_path, "strict", "--config", str(SHIPPED_CONFIG), "--min-accuracy", "0.999"
    )
    assert report["overall"]["accuracy"] < 0.999
    assert code == 1


def test_a_cheap_table_under_routes_and_a_dear_one_over_routes(tmp_path: Path) -> None:
    text = SHIPPED_CONFIG.read_text()
    cheap = text.replace(
        'class = "reasoning"\nmax_tokens = 8192', 'class = "fast"\nmax_tokens = 8192'
    )
    (tmp_path / "cheap.toml").write_text(cheap)
    _, report, _ = run_routing(tmp_path, "cheap", "--config", str(tmp_path / "cheap.toml"))
    reasoning = report["by_type"]["reasoning"]
    assert reasoning["under"] > 0 and reasoning["accuracy"] < 0.5
    dear = text.replace('[routes.chat]\nclass = "fast"', '[routes.chat]\nclass = "reasoning"')
    (tmp_path / "dear.toml").write_text(dear)
    _, report, _ = run_routing(tmp_path, "dear", "--config", str(tmp_path / "dear.toml"))
    chat = report["by_type"]["chat"]
    assert chat["over"] > 0 and chat["saving"] < 0.5


def test_strength_falls_back_to_price_without_tiers(tmp_path: Path) -> None:
    untiered = "\n".join(
        line for line in SHIPPED_CONFIG.read_text().splitlines() if not line.startswith("tier =")
    )
    (tmp_path / "untiered.toml").write_text(untiered)
    code, report, _ = run_routing(tmp_path, "untiered", "--config", str(tmp_path / "untiered.toml"))
    assert code == 0
    assert report["run"]["strength_basis"] == "price"
    strength = report["run"]["strength"]
    assert strength["open-weight"] < strength["fast"] < strength["flagship"]


def test_a_bad_task_set_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "x"}\n')
    code = main(["eval", "routing", "--config", str(SHIPPED_CONFIG), "--tasks", str(path)])
    assert code == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    with pytest.raises(TaskSetError, match="duplicate id"):
        line = SHIPPED_SET.read_text().splitlines()[0]
        parse_tasks(f"{line}\n{line}\n".encode())


# --- the task set ---------------------------------------------------------------------------


def test_the_shipped_set_is_what_the_generator_makes() -> None:
    assert render(generate()) == SHIPPED_SET.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "sidecar._evals._generate", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_set_covers_the_types_with_labels_and_checkers() -> None:
    items = load_tasks()
    assert len(items) >= 200
    per_type = collections.Counter(i.task_type for i in items)
    assert set(per_type) == set(TASK_TYPES) and min(per_type.values()) >= 10
    declared = collections.Counter(
        "missing" if i.declared is None else "own" if i.declared == i.task_type else "other"
        for i in items
    )
    assert declared["missing"] >= 40 and declared["other"] >= 15 and declared["own"] >= 100
    assert sum(i.checker is not None for i in items) >= 150
    assert {type(i.checker) for i in items} >= {
        ExactChecker,
        NumberChecker,
        RegexChecker,
        JsonChecker,
        ToolCallChecker,
        PythonTestChecker,
    }
    assert any(i.constraints.vision for i in items) and any(i.constraints.tools for i in items)
    assert any(i.constraints.compliance for i in items)
    # Some prompts are longer than the smallest context window of the shipped config (32k).
    assert any(i.constraints.context_tokens > 32_768 for i in items)


def test_every_reference_answer_passes_its_checker() -> None:
    assert verify(load_tasks()) == []


# --- checkers -------------------------------------------------------------------------------


def test_checkers_accept_right_answers_and_reject_wrong_ones() -> None:
    exact = ExactChecker(expected="Positive")
    assert check_pure(exact, Answer(" positive. ")).passed
    assert not check_pure(exact, Answer("negative")).passed
    number = NumberChecker(value=42.5)
    assert check_pure(number, Answer("The answer is 42.5")).passed
    assert check_pure(NumberChecker(value=1450), Answer("$1,450")).passed
    assert not check_pure(number, Answer("42")).passed
    assert not check_pure(number, Answer("no idea")).passed
    regex = RegexChecker(pattern=r"(?i)\bbonjour\b")
    assert check_pure(regex, Answer("Bonjour !")).passed
    assert not check_pure(regex, Answer("Hello")).passed
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    json_checker = JsonChecker(schema=schema, equals={"n": 3})
    assert check_pure(json_checker, Answer('```json\n{"n": 3}\n```')).passed
    assert not check_pure(json_checker, Answer('{"n": 4}')).passed
    assert not check_pure(json_checker, Answer('{"n": "3"}')).passed
    assert not check_pure(json_checker, Answer("n = 3")).passed
    tool = ToolCallChecker(name="get_weather", arguments={"city": "Lisbon"})
    right = ToolCallAnswer("get_weather", '{"city": "lisbon", "x": 1}')
    assert check_pure(tool, Answer(tool_calls=(right,))).passed
    assert not check_pure(tool, Answer(tool_calls=(ToolCallAnswer("get_time", "{}"),))).passed
    assert not check_pure(tool, Answer("It is sunny.")).passed


async def test_python_checker_runs_the_code_against_the_tests() -> None:
    checker = PythonTestChecker(test="assert double(4) == 8")
    assert (await check(checker, Answer("```python\ndef double(x):\n    return 2 * x\n```"))).passed
    failed = await check(checker, Answer("```python\ndef double(x):\n    return x\n```"))
    assert not failed.passed and "AssertionError" in failed.reason
    assert not (await check(checker, Answer("I would rather not."))).passed
