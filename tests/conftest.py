"""Shared fixtures. Datasets come from ../shared/datasets (or ICL_DATASETS_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path:
    configured = os.environ.get("ICL_DATASETS_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "datasets"


def load_split(dataset: str, split: str, limit: int | None = None) -> list[dict]:
    path = datasets_dir() / dataset / f"{split}.jsonl"
    if not path.is_file():
        pytest.fail(f"dataset file {path} is missing; set ICL_DATASETS_DIR to the shared datasets folder")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows
