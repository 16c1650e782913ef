"""Decision heads that read no model tokens: a regularised linear classifier on the retrieval embeddings the
service computes for every example anyway.

Few-shot prompting reads only the k examples in its prompt; a linear model reads every labeled example. On
the shared datasets, all-MiniLM-L6-v2 embeddings and a logistic regression match or beat SmolLM2's best fixed
count at no model tokens (``bench/embedding_baseline.py``), so the head is an option a fit must weigh.

Its held-back evidence is cross-fitted: each labeled example is judged by a head fitted on the folds that do
not hold it, and a group of near-twins (``controller.near_twins``) stays in one fold, so that no example is
judged by a head that saw its copy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

# Inverse regularisation of the logistic regression: scikit-learn's default, one value rather than a search
# inside every fold (twenty more fits per fit).
HEAD_C = 1.0
FOLDS = 5


def _model(C: float) -> LogisticRegression:
    # Balanced class weights: macro-F1 counts every label alike, and an unweighted fit on a skewed pool
    # (CR: four positives to a negative) answers the majority label too often.
    return LogisticRegression(C=C, class_weight="balanced", max_iter=2000)


def _probabilities(model: LogisticRegression | int, embeddings: np.ndarray, n_labels: int) -> np.ndarray:
    """(n, n_labels): the model's probabilities placed in the task's label columns (a label no training
    example had gets 0); a pool of one label (an int) puts all on it."""
    out = np.zeros((len(embeddings), n_labels))
    if isinstance(model, int):
        out[:, model] = 1.0
        return out
    out[:, model.classes_] = model.predict_proba(embeddings)
    return out


def _fitted(embeddings: np.ndarray, gold: np.ndarray, C: float) -> LogisticRegression | int:
    present = np.unique(gold)
    if len(present) < 2:
        return int(present[0])
    return _model(C).fit(embeddings, gold)


@dataclass(frozen=True)
class EmbeddingHead:
    """A logistic regression over a task's labels, fitted on every labeled example's embedding."""

    model: LogisticRegression | int  # an int: the one label every example had
    n_labels: int

    @classmethod
    def fit(cls, embeddings: np.ndarray, gold: np.ndarray, n_labels: int, C: float = HEAD_C) -> EmbeddingHead:
        """``gold``: each example's label index among ``n_labels``."""
        return cls(_fitted(np.asarray(embeddings), np.asarray(gold), C), n_labels)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_labels) label probabilities of these (normalised) embeddings."""
        return _probabilities(self.model, np.asarray(embeddings), self.n_labels)


def cross_fitted(embeddings: np.ndarray, gold: np.ndarray, n_labels: int, groups: np.ndarray, seed: int = 0,
                 folds: int = FOLDS, C: float = HEAD_C) -> np.ndarray:
    """(n, n_labels): each example's probabilities from a head fitted on the folds that do not hold it;
    ``groups``: per example, its near-twin group (``near_twins.twin_components``), kept in one fold."""
    embeddings, gold, groups = np.asarray(embeddings), np.asarray(gold), np.asarray(groups)
    splits = min(folds, len(np.unique(groups)))
    if splits < 2:
        raise ValueError("cross-fitting needs at least two groups of examples")
    out = np.zeros((len(gold), n_labels))
    for train, test in GroupKFold(n_splits=splits, shuffle=True, random_state=seed).split(embeddings, gold, groups):
        out[test] = _probabilities(_fitted(embeddings[train], gold[train], C), embeddings[test], n_labels)
    return out
