"""A task's own calibration, fitted on its held-back labeled examples: per count, which method corrects the model's
label bias best, and a temperature that makes the corrected probabilities honest confidences.

The fit job scores held-back examples at every candidate count anyway (for the meta-controller); from those
uncalibrated label distributions it evaluates, per count, the methods that cost (almost) nothing at serving time:
``none``, ``batch`` (divide by the mean distribution, Zhou et al. 2024; here the held-back mean, fixed for
serving), ``affine`` (a multinomial logistic map of the log-probabilities, fitted on held-back examples:
LinC-style) and, where every input shares one demonstration set (random selection), ``contextual`` and ``domain`` (that
set's bias estimated once, from content-free or random in-domain queries). Each is judged by 5-fold
cross-validation over the held-back examples; the first (in that order) whose out-of-fold macro-F1 is not
significantly below the best's wins. A temperature is then fitted on the winner's out-of-fold predictions, and
the served parameters are refitted on every held-back example.

It needs only the bias arithmetic (``controller.bias``) and the figures (``controller.metrics``): the
calibrators that serve its choice (``controller.calibration``) import it, never the other way round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from controller.bias import apply_bias, estimate_bias
from controller.metrics import (
    bootstrap_rows,
    expected_calibration_error,
    log_loss,
    macro_f1,
    paired_differences,
    significantly_below,
)

# Cheapest first: ties go to the earlier method.
FITTED_METHODS = ("none", "batch", "affine", "contextual", "domain")
# Methods that estimate a set's bias from calibration prompts at serving time.
PROMPT_METHODS = ("contextual", "domain")
FOLDS = 5
# Resamples of the paired bootstrap that says whether a method is significantly below the best.
RESAMPLES = 2000


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities p^(1/T), renormalised: T > 1 softens, T < 1 sharpens; the argmax never changes."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=-1, keepdims=True)


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature that minimises the log-loss (searched over log T in [-3, 3])."""
    result = minimize_scalar(lambda log_t: log_loss(with_temperature(probs, float(np.exp(log_t))), gold),
                             bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(result.x))


@dataclass(frozen=True)
class CountCalibration:
    """What a task's fit chose for one count: the method, its parameters, the temperature, and the held-back
    figures of every method it compared."""

    method: str
    temperature: float = 1.0
    # The mean uncalibrated distribution of the held-back examples: the bias "batch" divides out, and the
    # estimate a lone input gets under `calibration: "batch"`.
    held_back_mean: np.ndarray | None = None
    weights: np.ndarray | None = None  # affine: (n_labels, n_labels) on log-probabilities
    intercept: np.ndarray | None = None  # affine: (n_labels,)
    figures: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # The chosen method's validation ECE and log-loss once its temperature is applied.
    tempered: Mapping[str, float] = field(default_factory=dict)
    # Where every input shares one set (random selection): the ids of the set it was fitted under, in prompt
    # order. Its held-back mean, map and choice are that set's: another set (another seed, a changed pool, a
    # trimmed set) does not get them.
    demo_ids: tuple[str, ...] | None = None

    def needs_prompts(self) -> bool:
        """Whether its method estimates a bias from calibration prompts at serving time."""
        return self.method in PROMPT_METHODS

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """The method's correction of uncalibrated distributions (n, L) or (L,), before the temperature; for
        prompt-based methods the caller divides the bias out first and this returns what it is given."""
        probs = np.asarray(probs, dtype=np.float64)
        if self.method == "batch" and self.held_back_mean is not None:
            return apply_bias(probs, self.held_back_mean)
        if self.method == "affine" and self.weights is not None and self.intercept is not None:
            logits = np.log(np.clip(probs, 1e-12, None)) @ self.weights.T + self.intercept
            logits -= logits.max(axis=-1, keepdims=True)
            out = np.exp(logits)
            return out / out.sum(axis=-1, keepdims=True)
        return probs

    def with_temperature(self, probs: np.ndarray) -> np.ndarray:
        return with_temperature(probs, self.temperature)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """The method's correction, then the temperature."""
        return self.with_temperature(self.transform(probs))

    def describe(self) -> dict:
        return {"method": self.method, "temperature": self.temperature, **self.tempered,
                "validation": {m: dict(f) for m, f in self.figures.items()}}


def _affine(probs: np.ndarray, gold: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A multinomial logistic map of log-probabilities (one weight matrix and intercept), lightly regularised;
    None when the examples hold fewer than two labels."""
    if len(np.unique(gold)) < 2:
        return None
    model = LogisticRegression(C=1.0, max_iter=1000).fit(np.log(np.clip(probs, 1e-12, None)), gold)
    weights = np.zeros((n_labels, n_labels))
    intercept = np.full(n_labels, -30.0)  # labels never seen held back: never chosen
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: logit of the second
        weights[model.classes_[1]] = model.coef_[0]
        intercept[model.classes_[1]] = model.intercept_[0]
        weights[model.classes_[0]] = 0.0
        intercept[model.classes_[0]] = 0.0
    else:
        weights[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    return weights, intercept


def _candidate(method: str, probs: np.ndarray, gold: np.ndarray, n_labels: int,
               prompted: Mapping[str, np.ndarray]) -> CountCalibration | None:
    """The method fitted on these examples (None when it cannot be)."""
    mean = estimate_bias(probs)
    if method in ("none", "batch"):
        return CountCalibration(method, held_back_mean=mean)
    if method == "affine":
        fitted = _affine(probs, gold, n_labels)
        return None if fitted is None else CountCalibration("affine", held_back_mean=mean, weights=fitted[0],
                                                            intercept=fitted[1])
    if method in prompted:
        return CountCalibration(method, held_back_mean=mean)
    return None


def _folds(n: int, seed: int) -> list[np.ndarray]:
    return [f for f in np.array_split(np.random.default_rng(seed).permutation(n), min(FOLDS, n)) if len(f)]


def out_of_fold(method: str, probs: np.ndarray, gold: np.ndarray, n_labels: int, seed: int,
                prompted: Mapping[str, np.ndarray] | None = None) -> np.ndarray | None:
    """``method``'s corrections of every held-back example by a fit on the other folds (``FOLDS``-fold), so
    that none is judged on what it was fitted on; None when the method cannot be fitted here."""
    prompted = dict(prompted or {})
    probs, gold = np.asarray(probs, dtype=np.float64), np.asarray(gold, dtype=np.int64)
    folds = _folds(len(gold), seed)
    predicted = np.zeros_like(probs)
    for fold in folds:
        train = np.setdiff1d(np.arange(len(gold)), fold) if len(folds) > 1 else fold
        candidate = _candidate(method, probs[train], gold[train], n_labels, prompted)
        if candidate is None:
            return None
        predicted[fold] = candidate.transform(prompted.get(candidate.method, probs)[fold])
    return predicted


def _simplest_not_below(predictions: Mapping[str, np.ndarray], gold: np.ndarray, n_labels: int,
                        seed: int) -> str:
    """The first method (in ``FITTED_METHODS``' order: no correction first, prompt methods, which cost prompts
    at serving time, last) whose out-of-fold macro-F1 is not significantly below the best method's, by a
    paired bootstrap on the same held-back examples (one-sided 5%): a method must earn its place by more
    than the noise of a hundred examples."""
    scores = {m: macro_f1(gold, p.argmax(axis=1), n_labels) for m, p in predictions.items()}
    best = max(scores, key=lambda m: (round(scores[m], 9), -FITTED_METHODS.index(m)))
    rows = bootstrap_rows(len(gold), RESAMPLES, np.random.default_rng(seed))
    for method in FITTED_METHODS:
        if method not in predictions:
            continue
        if method == best or not significantly_below(paired_differences(
                gold, predictions[method].argmax(axis=1), predictions[best].argmax(axis=1), n_labels, rows)):
            return method
    return best


def fit_count(probs: np.ndarray, gold: Sequence[int], n_labels: int, seed: int,
              prompted: Mapping[str, np.ndarray] | None = None) -> CountCalibration:
    """Choose and fit one count's calibration from held-back uncalibrated distributions ``probs`` (n, L) and
    their gold label indices; ``prompted``: the same examples calibrated by a prompt method (``contextual``,
    ``domain``), for the methods that are cheap to serve here (a shared demonstration set).

    Every method is judged on out-of-fold predictions (``FOLDS``-fold cross-validation over the held-back
    examples), so all of them count and none is judged on what it was fitted on; the simplest method not
    significantly below the best is chosen (``_simplest_not_below``). The temperature is fitted on the
    chosen method's out-of-fold predictions, and its figures are measured out of fold too."""
    prompted = dict(prompted or {})
    probs = np.asarray(probs, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    n = len(gold)
    folds = _folds(n, seed)
    figures: dict[str, dict[str, float]] = {}
    predictions: dict[str, np.ndarray] = {}
    for method in FITTED_METHODS:
        out = out_of_fold(method, probs, gold, n_labels, seed, prompted)
        if out is None:
            continue
        predictions[method] = out
        figures[method] = {"macro_f1": macro_f1(gold, out.argmax(axis=1), n_labels),
                           "ece": expected_calibration_error(out, gold), "log_loss": log_loss(out, gold)}
    best = _simplest_not_below(predictions, gold, n_labels, seed)
    chosen = predictions[best]
    # The temperature's own figures: each fold tempered by a temperature fitted on the other folds.
    tempered = np.zeros_like(chosen)
    for fold in folds:
        others = np.setdiff1d(np.arange(n), fold) if len(folds) > 1 else fold
        tempered[fold] = with_temperature(chosen[fold], fit_temperature(chosen[others], gold[others]))
    after = {"ece_with_temperature": expected_calibration_error(tempered, gold),
             "log_loss_with_temperature": log_loss(tempered, gold)}
    # What is served: the winner refitted on every held-back example, with the out-of-fold temperature.
    final = _candidate(best, probs, gold, n_labels, prompted)
    assert final is not None
    return CountCalibration(best, fit_temperature(chosen, gold), final.held_back_mean, final.weights,
                            final.intercept, figures, after)


@dataclass(frozen=True)
class TaskCalibration:
    """A task's fitted calibration for one selection: per candidate count, what ``calibration: "auto"``
    applies; other counts take the nearest fitted count's."""

    selection: str
    counts: Mapping[int, CountCalibration]

    def for_count(self, k: int) -> CountCalibration:
        nearest = min(self.counts, key=lambda c: (abs(c - k), c))
        return self.counts[nearest]

    def for_demonstrations(self, demo_ids: Sequence[str]) -> CountCalibration | None:
        """What an input served with these demonstrations gets: its count's (the nearest fitted count's),
        unless that was fitted under one shared set and these are another; then None."""
        chosen = self.for_count(len(demo_ids))
        if chosen.demo_ids is not None and tuple(demo_ids) != chosen.demo_ids:
            return None
        return chosen

    def describe(self) -> dict:
        return {"selection": self.selection, "counts": {str(k): c.describe() for k, c in self.counts.items()}}


def fit_task_calibration(selection: str, candidate_k: Sequence[int], distributions: np.ndarray,
                         gold: Sequence[int], n_labels: int, seed: int,
                         prompted: Mapping[str, np.ndarray] | None = None,
                         served: Mapping[int, Sequence[str]] | None = None,
                         scored: Sequence[int] | None = None) -> TaskCalibration:
    """Every count's calibration from held-back distributions (n, K, L) (``distributions[:, j]`` at
    ``candidate_k[j]``); ``prompted``: per prompt method, the same (n, K, L) calibrated, where computed;
    ``served``: per count, the ids of the one set every held-back example was scored under, where they share
    one; ``scored``: per count, how many leading examples it was scored on (None: all)."""
    prompted = prompted or {}
    served = served or {}
    gold = np.asarray(gold)
    counts = {}
    for j, k in enumerate(candidate_k):
        n = len(gold) if scored is None else int(scored[j])
        fitted = fit_count(distributions[:n, j], gold[:n], n_labels, seed,
                           {m: d[:n, j] for m, d in prompted.items()})
        ids = served.get(int(k))
        counts[int(k)] = replace(fitted, demo_ids=tuple(ids)) if ids is not None else fitted
    return TaskCalibration(selection, counts)
