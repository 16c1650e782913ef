"""Accuracy and macro-F1 of answers given as label names, computed by ``controller.metrics`` (on label indices),
so that the service's fit and the benchmarks report the same arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from controller.metrics import macro_f1


def indices(values: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Label names as their indices in ``labels``."""
    position = {label: i for i, label in enumerate(labels)}
    return np.array([position[value] for value in values], dtype=np.int64)


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels against {len(predicted)} answers")
    return float(np.mean([g == p for g, p in zip(gold, predicted, strict=True)])) if gold else 0.0


def label_figures(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, and macro-F1 over every label of the task (a label neither gold nor predicted scores 0)."""
    return {"accuracy": accuracy(gold, predicted),
            "macro_f1": macro_f1(indices(gold, labels), indices(predicted, labels), len(labels))}


def macro_f1_seen(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Macro-F1 over the labels that occur among ``gold`` or ``predicted`` only (scikit-learn's ``f1_score``
    without ``labels=``): what bench/eval_http.py and bench/controller_curve.py have always reported. It is
    higher than ``label_figures``' where some label of the task is neither."""
    seen = sorted(set(gold) | set(predicted))
    return macro_f1(indices(gold, seen), indices(predicted, seen), len(seen))
