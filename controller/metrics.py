"""How good a set of answers is: macro-F1, expected calibration error, log-loss, and the paired bootstrap that
says whether one method beats another on the same items. The fit and bench/ both use these, so a figure the
fit reports and one a benchmark prints are the same arithmetic.

Every function takes the gold answers first, then the predicted ones. Labels are indices (0 .. n_labels-1);
every label counts in macro-F1, one never predicted nor gold scoring 0, as scikit-learn's
``f1_score(average="macro", labels=range(n_labels), zero_division=0)``. In numpy because the fit replays
thousands of cascades and the bootstrap thousands of resamples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ECE_BINS = 10


def macro_f1(gold: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    """Macro-F1 of ``predicted`` label indices against ``gold`` ones."""
    return float(macro_f1_rows(np.asarray(gold)[None], np.asarray(predicted)[None], n_labels)[0])


def macro_f1_rows(gold: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row of ``predicted`` (draws, n) against the same row of ``gold`` (draws, n)."""
    predicted, gold = np.asarray(predicted, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    draws = predicted.shape[0]
    offsets = (np.arange(draws) * n_labels)[:, None]
    size = draws * n_labels
    true_pos = np.bincount((gold + offsets)[predicted == gold], minlength=size).reshape(draws, n_labels)
    n_pred = np.bincount((predicted + offsets).ravel(), minlength=size).reshape(draws, n_labels)
    n_gold = np.bincount((gold + offsets).ravel(), minlength=size).reshape(draws, n_labels)
    total = n_pred + n_gold
    f1 = np.divide(2 * true_pos, total, out=np.zeros(total.shape), where=total > 0)
    return f1.mean(axis=1)


def accuracy_rows(gold: np.ndarray, predicted: np.ndarray, n_labels: int) -> np.ndarray:
    """Accuracy of each row (``n_labels`` unused: the same signature as ``macro_f1_rows``)."""
    return (np.asarray(predicted) == np.asarray(gold)).mean(axis=1)


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins: the gap between confidence (the top probability) and
    accuracy, weighted by each bin's share of the examples."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(gold)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(total)


def log_loss(probs: np.ndarray, gold: np.ndarray) -> float:
    """Mean negative log-probability of the gold label (clipped at 1e-12)."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval."""

    point: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


Metric = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (gold rows, predicted rows, n_labels) -> per row


def bootstrap_rows(n_items: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n_items) item indices resampled with replacement: share them between methods to pair them."""
    return rng.integers(0, n_items, (draws, n_items))


def bootstrap(gold: np.ndarray, predicted: np.ndarray, n_labels: int, rows: np.ndarray,
              metric: Metric = macro_f1_rows) -> Interval:
    """``metric`` of one method's answers with a 95% interval over the resampled ``rows``."""
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    values = metric(gold[rows], predicted[rows], n_labels)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(float(metric(gold[None], predicted[None], n_labels)[0]), float(low), float(high))


def paired_bootstrap(gold: np.ndarray, a: np.ndarray, b: np.ndarray, n_labels: int, rows: np.ndarray,
                     metric: Metric = macro_f1_rows) -> Interval:
    """``metric(a) - metric(b)`` on the same items, with a 95% interval from the same resampled ``rows`` for
    both: an interval that holds 0 says neither wins."""
    gold, a, b = np.asarray(gold), np.asarray(a), np.asarray(b)
    diffs = metric(gold[rows], a[rows], n_labels) - metric(gold[rows], b[rows], n_labels)
    low, high = np.percentile(diffs, [2.5, 97.5])
    point = metric(gold[None], a[None], n_labels)[0] - metric(gold[None], b[None], n_labels)[0]
    return Interval(float(point), float(low), float(high))


def paired_differences(gold: np.ndarray, a: np.ndarray, b: np.ndarray, n_labels: int, rows: np.ndarray,
                       metric: Metric = macro_f1_rows) -> np.ndarray:
    """``metric(a) - metric(b)`` on each resample of ``rows``: the distribution one-sided tests read."""
    gold, a, b = np.asarray(gold), np.asarray(a), np.asarray(b)
    return metric(gold[rows], a[rows], n_labels) - metric(gold[rows], b[rows], n_labels)


def significantly_below(differences: np.ndarray, alpha: float = 0.05) -> bool:
    """Whether a method is significantly below another, one-sided at ``alpha``, from the bootstrap
    ``differences`` (it minus the other): even the upper ``1 - alpha`` bound of the difference is below 0."""
    return bool(np.percentile(differences, 100 * (1 - alpha)) < 0)


def significantly_above(differences: np.ndarray, alpha: float = 0.05) -> bool:
    """Whether a method is significantly above another, one-sided at ``alpha``: even the lower ``alpha`` bound
    of the difference is above 0."""
    return bool(np.percentile(differences, 100 * alpha) > 0)
