"""``tollgate eval swap``: the gate refuses a worse candidate, accepts an equal or better one,
and ``--apply`` edits the config file only then. Offline: every provider is a fake whose models
answer the route's checked items right at a set quality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sidecar._cli import main
from sidecar._config import load_config
from sidecar._evals._apply import ApplyError, apply_swap
from sidecar._evals._stats import compare_paired

SHIPPED_CONFIG = Path(__file__).parents[2] / "deploy" / "tollgate.example.toml"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tollgate.toml"
    path.write_text(SHIPPED_CONFIG.read_text())
    return path


def swap(config: Path, out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code = main(
        ["eval", "swap", "--config", str(config), "--providers", "fake", "--out", str(out), *args]
    )
    reports = list(out.glob("swap-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    return code, json.loads(reports[0].read_text())


def test_a_worse_candidate_is_refused_and_the_config_left_alone(
    config_file: Path, tmp_path: Path
) -> None:
    before = config_file.read_bytes()
    code, report = swap(
        config_file,
        tmp_path / "out",
        "--route", "extract", "--candidate", "gemini-2.5-flash", "--apply",
        "--fake-quality", "gpt-4o-mini=1.0", "--fake-quality", "gemini-2.5-flash=0.4",
    )  # fmt: skip
    assert code == 1
    assert report["verdict"]["accepted"] is False
    assert any("worse than the tolerance" in r for r in report["verdict"]["reasons"])
    comparison = report["comparison"]
    assert comparison["incumbent_pass_rate"] == 1.0
    assert comparison["candidate_pass_rate"] < 0.9
    assert comparison["only_incumbent"] > 0 and comparison["only_candidate"] == 0
    assert report["incumbent"]["model"] == "gpt-4o-mini"
    assert report["incumbent"]["source"] == report["candidate"]["source"] == "fake"
    assert report["applied"] is None
    assert config_file.read_bytes() == before


def test_a_better_candidate_is_accepted_and_applied(config_file: Path, tmp_path: Path) -> None:
    code, report = swap(
        config_file,
        tmp_path / "out",
        "--route", "extract", "--candidate", "gemini-2.5-flash", "--apply",
        "--fake-quality", "gpt-4o-mini=0.5", "--fake-quality", "gemini-2.5-flash=1.0",
    )  # fmt: skip
    assert code == 0
    assert report["verdict"]["accepted"] is True
    assert report["comparison"]["candidate_pass_rate"] == 1.0
    assert report["comparison"]["difference"] > 0
    # Items of the route only, all with checkers.
    ids = [item["id"] for item in report["items"]]
    assert ids and all(i.startswith("extract-") for i in ids)
    # "fast" is shared with other routes, so extract gets a class of its own.
    assert "fast-extract" in report["applied"]
    config = load_config(config_file)
    assert config.classes[config.routes["extract"].model_class].members[0] == "gemini-2.5-flash"
    assert config.classes["fast"].members[0] == "gpt-4o-mini"
    assert config.routes["chat"].model_class == "fast"
    # The rest of the file (comments included) is untouched.
    assert "# Personal data: only models tagged pii_safe" in config_file.read_text()


def test_an_equal_candidate_is_accepted_without_touching_the_file_unless_asked(
    config_file: Path, tmp_path: Path
) -> None:
    before = config_file.read_bytes()
    code, report = swap(
        config_file, tmp_path / "out", "--route", "reasoning", "--candidate", "claude-sonnet-4-5"
    )
    assert code == 0
    assert report["verdict"]["accepted"] is True
    assert report["comparison"]["difference"] == 0
    assert config_file.read_bytes() == before


def test_apply_edits_an_unshared_class_in_place(config_file: Path, tmp_path: Path) -> None:
    code, report = swap(
        config_file,
        tmp_path / "out",
        "--route", "reasoning", "--candidate", "claude-sonnet-4-5", "--apply",
    )  # fmt: skip
    assert code == 0, report["verdict"]
    assert report["applied"].startswith("class 'reasoning' (route 'reasoning') is now")
    text = config_file.read_text()
    assert 'members = ["claude-sonnet-4-5", "o3"]' in text
    assert load_config(config_file).classes["reasoning"].members == ["claude-sonnet-4-5", "o3"]


def test_a_candidate_that_cannot_take_the_routes_items_is_refused(
    config_file: Path, tmp_path: Path
) -> None:
    code, report = swap(
        config_file, tmp_path / "out", "--route", "vision", "--candidate", "llama-3.1-8b"
    )
    assert code == 1
    assert report["unfit"] and all("lacks_vision" in u for u in report["unfit"])
    assert any("cannot take" in r for r in report["verdict"]["reasons"])


def test_bad_arguments_are_clear_errors(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["eval", "swap", "--config", str(config_file), "--out", str(tmp_path)]
    assert main([*base, "--route", "nope", "--candidate", "o3"]) == 2
    assert "unknown route 'nope'" in capsys.readouterr().err
    assert main([*base, "--route", "chat", "--candidate", "gpt-9"]) == 2
    assert "add it under [models] first" in capsys.readouterr().err
    assert main([*base, "--route", "chat", "--candidate", "gpt-4o-mini"]) == 2
    assert "already" in capsys.readouterr().err
    args = ["--route", "extract", "--candidate", "o3", "--fake-quality", "o3=2"]
    assert main([*base, *args]) == 2
    assert "--fake-quality" in capsys.readouterr().err


def test_apply_refuses_a_layout_it_cannot_edit(tmp_path: Path) -> None:
    path = tmp_path / "inline.toml"
    path.write_text(
        'default_route = "chat"\n'
        'providers = { p = { kind = "openai", base_url = "http://127.0.0.1:9/v1" } }\n'
        "models = { a = { provider = 'p', context_window = 8000, price = { input = 1.0, output = 1.0 } }, "  # noqa: E501
        "b = { provider = 'p', context_window = 8000, price = { input = 1.0, output = 1.0 } } }\n"
        'classes = { fast = { members = ["a", "b"] } }\n'
        'routes = { chat = { class = "fast" } }\n'
    )
    before = path.read_bytes()
    with pytest.raises(ApplyError, match="edit it by hand"):
        apply_swap(path, load_config(path), "chat", "b")
    assert path.read_bytes() == before


def test_the_paired_statistics() -> None:
    same = compare_paired([True, False] * 10, [True, False] * 10)
    assert (same.difference, same.mcnemar_p, same.worse_p) == (0.0, 1.0, 1.0)
    assert same.ci_low == same.ci_high == 0.0
    worse = compare_paired([True] * 10, [True] * 4 + [False] * 6)
    # 6 discordant pairs, all against the candidate: P(X >= 6 | n = 6) = 1/64.
    assert (worse.only_incumbent, worse.only_candidate) == (6, 0)
    assert worse.worse_p == pytest.approx(1 / 64, abs=1e-6)
    assert worse.mcnemar_p == pytest.approx(2 / 64, abs=1e-6)
    assert worse.ci_high < 0
    # Seeded: the same outcomes give the same interval.
    assert compare_paired([True] * 10, [True] * 4 + [False] * 6) == worse
