"""Results files: JSON under ``bench/results/`` named ``<benchmark>-<time>.json``, rewritten after every row
so that a run cut short keeps what it did, and read back by the benchmarks' ``--table`` options."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import REPO

RESULTS = REPO / "bench" / "results"


def add_out_argument(parser: argparse.ArgumentParser, default: Path = RESULTS) -> None:
    parser.add_argument("--out", type=Path, default=default, help=f"results folder (default: {default})")


def results_path(folder: Path, name: str) -> Path:
    """``folder/name-<time>.json``, the folder made if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def write_json(path: Path, value: Any, indent: int | None = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=indent))
    return path


def save_results(folder: Path, name: str, value: Any) -> Path:
    """Write a benchmark's results to a new ``results_path`` and say where."""
    path = write_json(results_path(folder, name), value)
    print(f"\nresults: {path}")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def read_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows of results files, in order: each a JSON list of rows, or a log of a benchmark's output (one JSON
    object per line, other lines skipped; older runs kept those)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        text = path.read_text()
        if text.lstrip().startswith("["):
            rows += json.loads(text)
        else:
            rows += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return rows


class ResultsLog:
    """A run's rows, printed as they come and written to ``path`` after each one."""

    def __init__(self, path: Path, rows: Sequence[dict[str, Any]] = (), indent: int | None = 1) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = list(rows)
        self.indent = indent  # None for rows that carry long lists (per-item probabilities)

    def append(self, row: dict[str, Any], shown: dict[str, Any] | None = None) -> None:
        """Keep ``row``, print ``shown`` (default: the row) as one JSON line, rewrite the file."""
        self.rows.append(row)
        print(json.dumps(row if shown is None else shown), flush=True)
        self.save()

    def save(self) -> None:
        write_json(self.path, self.rows, self.indent)
