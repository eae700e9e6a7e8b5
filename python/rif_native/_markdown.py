"""Markdown tables for the command line, the reports and the benchmark tables."""

from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(header: Sequence[str], align: Sequence[str],
                   rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header cells, one alignment cell per column ("---" or "---:"), and
    rows of cells (already formatted; anything else goes through str)."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
