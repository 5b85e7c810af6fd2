"""``tollgate eval faults``: the whole matrix passes, and the harness does catch failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from adapters.fakes import HangBeforeHeadersFault, StatusFault
from sidecar._evals._faults import (
    FALLBACK,
    FAULTS,
    PRIMARY,
    PROTOCOLS,
    FaultCase,
    run_fault_matrix,
)

ROOT = Path(__file__).parents[2]


async def test_every_cell_of_the_matrix_passes() -> None:
    report = await run_fault_matrix()
    failures = [r for r in report.results if not r.passed]
    assert failures == []
    assert report.cells == len(PROTOCOLS) * len(FAULTS) * 2
    cells = {(r.protocol, r.fault, r.stream): r for r in report.results}
    assert len(cells) == report.cells
    for protocol in PROTOCOLS:
        # A bad request is tried once, never elsewhere.
        for stream in (False, True):
            bad = cells[protocol, "bad request 400", stream]
            assert (bad.actual, bad.attempts, bad.fallbacks) == ("error:invalid_request", 1, 0)
            # A hung primary costs its timeouts (one retry), then the fallback answers.
            hung = cells[protocol, "hang before headers", stream]
            assert (hung.actual, hung.attempts, hung.retries) == (FALLBACK, 3, 1)
            assert hung.breaker == "opened" and hung.added_latency_ms > 0
            # A wrong key skips the provider at once, and one failure does not open its breaker.
            auth = cells[protocol, "auth 401", stream]
            assert (auth.attempts, auth.retries, auth.breaker) == (2, 0, "closed")
        broken = cells[protocol, "mid-stream error after 2 chunks", True]
        assert broken.actual == "error:upstream_stream_broken"


async def test_a_wrong_expectation_or_a_hang_fails_its_cell() -> None:
    wrong = FaultCase(
        "500 expected to be served by the primary",
        lambda kind: StatusFault(status=500),
        (PRIMARY, PRIMARY),
        "a deliberately wrong expectation",
    )
    hang = FaultCase(
        "hang longer than the cell deadline",
        lambda kind: HangBeforeHeadersFault(),
        (FALLBACK, FALLBACK),
        "the route's timeouts are longer than the cell's deadline",
    )
    report = await run_fault_matrix(
        protocols=["openai"],
        faults=[wrong, hang],
        timeout_s=30.0,
        route_deadline_s=60.0,
        cell_deadline_s=1.0,
    )
    results = {(r.fault, r.stream): r for r in report.results}
    assert report.failed == 4
    for stream in (False, True):
        assert "expected served:primary, got served:fallback" in results[wrong.name, stream].detail
        assert results[hang.name, stream].actual == "hang"


def test_the_command_writes_its_reports_and_exits_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sidecar._cli import main; sys.exit(main())",
            "eval",
            "faults",
            "--protocol",
            "anthropic",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(FAULTS) * 2} cells: {len(FAULTS) * 2} passed, 0 failed" in result.stdout
    # The faults are on purpose: their warnings are not printed.
    assert "circuit opened" not in result.stderr
    report = json.loads((tmp_path / "faults.json").read_text())
    assert report["failed"] == 0 and report["cells"] == len(FAULTS) * 2
    assert "| anthropic | overloaded |" in (tmp_path / "faults.md").read_text()
