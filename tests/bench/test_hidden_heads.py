"""bench/hidden_heads.py's pure parts: the cascade of the embedding head then a hidden-state head, replayed on
saved answers, and the tables of a tiny results document (read back through --table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import hidden_heads as hh


def _probs(gold: np.ndarray, right: np.ndarray, confidence: float) -> list[list[float]]:
    """Two-label distributions: the gold label where ``right``, the other one elsewhere, at ``confidence``."""
    answers = np.where(right, gold, 1 - gold)
    out = np.full((len(gold), 2), 1 - confidence)
    out[np.arange(len(gold)), answers] = confidence
    return out.tolist()


def record() -> dict[str, Any]:
    """The embedding head sure and right on the first half of the items and unsure and wrong on the rest; the
    hidden-state head right everywhere: the cascade should send the second half on."""
    rng = np.random.default_rng(0)
    gold_pool, gold = rng.integers(0, 2, 200), rng.integers(0, 2, 100)

    def embedding(labels: np.ndarray) -> list[list[float]]:
        half = np.arange(len(labels)) < len(labels) // 2
        sure, unsure = _probs(labels, half, 0.95), _probs(labels, half, 0.55)
        return [s if h else u for s, u, h in zip(sure, unsure, half, strict=True)]

    heads = {name: {"macro_f1": 1.0, "ece": 0.1, "ece_tempered": 0.05,
                    "probs": _probs(gold, np.ones(100, bool), 0.9),
                    "cross_fitted": _probs(gold_pool, np.ones(200, bool), 0.9),
                    "answers": gold.tolist()} for name in hh.HEADS}
    return {"n_train": 200, "n_test": 100, "best_k": 4, "best_macro_f1": 0.6, "gold_pool": gold_pool.tolist(),
            "gold": gold.tolist(), "embedding_head": {"macro_f1": 0.75, "probs": embedding(gold),
                                                      "cross_fitted": embedding(gold_pool)},
            "counts": {"1": {"prompt_tokens_per_input": 40.0, "heads": heads}}}


def test_the_cascade_sends_on_what_the_embedding_head_is_unsure_of():
    played = hh.head_cascade(record(), "1")
    assert played is not None and played["macro_f1"] == 1.0
    assert played["share_on"] == 0.5 and played["tokens"] == 20.0


def test_saved_results_print_as_tables(tmp_path: Path, capsys):
    path = tmp_path / "hidden-heads-1.json"
    path.write_text(json.dumps({"source": "unused", "counts": [1], "datasets": {"sst2": record()}}))
    hh.main(["--table", str(path)])
    printed = capsys.readouterr().out
    assert "| sst2 | 0.600 | 4 | 0.750 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 / 20 |" in printed
    assert "joint-linear k=1: 1.000 (1)" in printed
