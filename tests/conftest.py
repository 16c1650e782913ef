"""Shared fixtures. Data comes from tests/data: label-stratified slices of the benchmark datasets, each row with
its line in the full split (scripts/make-test-data.py writes them), so that a bare clone runs every test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def load_split(dataset: str, split: str, limit: int | None = None) -> list[dict]:
    """A slice's rows in source order (``limit``: the first ones); each has its source ``line``."""
    path = DATA / dataset / f"{split}.jsonl"
    if not path.is_file():
        pytest.fail(f"test data {path} is missing; scripts/make-test-data.py writes it")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows[:limit] if limit is not None else rows
