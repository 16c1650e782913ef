"""Markdown tables, as bench/README.md shows them: the benchmarks print them and the README keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: float | None, spec: str = ".3f") -> str:
    """A number in ``spec``, or "-" where there is none."""
    return "-" if value is None else format(value, spec)


def _line(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {value} " if str(value) else " " for value in cells) + "|"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = [_line(header), "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} columns: {row}")
        lines.append(_line(row))
    return "\n".join(lines)


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> None:
    """The table after a blank line, under ``title`` if given."""
    print(f"\n{title}\n" if title else "")
    print(markdown_table(header, rows), flush=True)
