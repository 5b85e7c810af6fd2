"""Plain-text tables for the command line: columns padded to their widest cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

__all__ = ["print_table"]


def print_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, *, rule: bool = False
) -> None:
    """Write ``header`` and ``rows`` to ``out``, two spaces between columns; ``rule`` underlines
    the header with dashes. Lines carry no trailing blanks."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> None:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        out.write("  ".join(padded).rstrip() + "\n")

    line(header)
    if rule:
        line(["-" * width for width in widths])
    for row in rows:
        line(row)
