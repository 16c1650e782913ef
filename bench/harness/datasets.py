"""The datasets the benchmarks read: the shared full copies (``ICL_DATASETS_DIR``, default ``../shared/datasets``
beside the repository) or the slices in ``tests/data``. Both hold ``<name>/{train,test}.jsonl`` and a
``MANIFEST.json`` naming each dataset's labels in their order."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import REPO

TEST_DATA = REPO / "tests" / "data"
DEFAULT_TEMPLATE = "Input: {text}\nLabel: {label}"
TEMPLATES = {"rte": "Premise: {premise}\nHypothesis: {hypothesis}\nLabel: {label}"}
INPUT_FIELDS = ("text", "premise", "hypothesis")


def datasets_dir() -> Path:
    """Read at every call, so that a shell or a test can point the benchmarks elsewhere."""
    return Path(os.environ.get("ICL_DATASETS_DIR") or REPO.parent / "shared" / "datasets")


def load(dataset: str, split: str, root: Path | None = None) -> list[dict[str, Any]]:
    """A split's rows in file order."""
    path = (root or datasets_dir()) / dataset / f"{split}.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def dataset_names(root: Path | None = None) -> list[str]:
    """Every dataset the MANIFEST names, in its order."""
    return list(json.loads(((root or datasets_dir()) / "MANIFEST.json").read_text()))


def manifest_labels(dataset: str, root: Path | None = None) -> list[str]:
    return json.loads(((root or datasets_dir()) / "MANIFEST.json").read_text())[dataset]["labels"]


def template_for(dataset: str) -> str:
    """The benchmarks' template: the label names as verbalizers after the input (RTE: its two fields)."""
    return TEMPLATES.get(dataset, DEFAULT_TEMPLATE)


def input_of(row: dict[str, Any], template: str) -> str | dict[str, Any]:
    """A row as the service takes it under ``template``: its text alone, or the fields the template names."""
    fields = [f for f in INPUT_FIELDS if "{" + f + "}" in template]
    return row[fields[0]] if len(fields) == 1 else {f: row[f] for f in fields}


def task_name(dataset: str) -> str:
    """The name of a benchmark's task for ``dataset`` (task names take no underscores)."""
    return f"bench-{dataset.replace('_', '-')}"


def shuffled(rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A copy of ``rows`` in the order ``random.Random(seed)`` shuffles them (every benchmark's order)."""
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


@dataclass(frozen=True)
class Dataset:
    """One dataset as a benchmark task: its labels and template, and both splits shuffled by the seed."""

    name: str
    labels: list[str]
    template: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]

    def inputs(self, rows: Sequence[dict[str, Any]]) -> list[str | dict[str, Any]]:
        return [input_of(row, self.template) for row in rows]

    def examples(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Labeled examples for the service, with ids that name the dataset."""
        return [{"id": f"{self.name}-{i}", "input": input_of(row, self.template), "label": row["label"]}
                for i, row in enumerate(rows)]

    def require(self, pool_size: int, n_test: int) -> None:
        """Stop the benchmark when the splits are smaller than it needs."""
        if len(self.train) < pool_size or len(self.test) < n_test:
            raise SystemExit(f"{self.name}: {len(self.train)} training and {len(self.test)} test rows; asked for "
                             f"{pool_size} and {n_test}")


def load_dataset(name: str, seed: int, root: Path | None = None) -> Dataset:
    """``name``'s splits, each shuffled by ``random.Random(seed)``, with its MANIFEST labels."""
    return Dataset(name, manifest_labels(name, root), template_for(name), shuffled(load(name, "train", root), seed),
                   shuffled(load(name, "test", root), seed))
