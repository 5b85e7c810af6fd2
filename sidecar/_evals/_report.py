"""Writing reports: JSON with sorted keys (diffable, reproducible) and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

__all__ = ["encode_json", "table", "write_report"]


def encode_json(report: object) -> bytes:
    """Sorted keys and a fixed layout: the same report is the same bytes."""
    data = msgspec.json.encode(msgspec.to_builtins(report), order="sorted")
    return msgspec.json.format(data, indent=2) + b"\n"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, name: str, report: object, markdown: str) -> list[Path]:
    """``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``; returns their paths."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{name}.json"
    md_path = directory / f"{name}.md"
    json_path.write_bytes(encode_json(report))
    md_path.write_text(markdown)
    return [json_path, md_path]
