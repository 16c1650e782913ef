"""Decision heads that read no model tokens: a regularised linear classifier on the retrieval embeddings the
service computes for every example anyway.

Few-shot prompting reads only the k examples in its prompt; a linear model reads every labeled example. On
the shared datasets, all-MiniLM-L6-v2 embeddings and a logistic regression match or beat SmolLM2's best fixed
count at no model tokens (``bench/embedding_baseline.py``), so the head is an option a fit must weigh.

Its held-back evidence is cross-fitted: each labeled example is judged by a head fitted on the folds that do
not hold it, and a group of near-twins (``controller.near_twins``) stays in one fold, so that no example is
judged by a head that saw its copy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from controller.calibration_fit import with_temperature

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
    """A logistic regression over a task's labels, fitted on every labeled example's embedding, its
    probabilities tempered (``temperature``: fitted on its cross-fitted answers by the fit; 1 leaves them as
    the regression gives them, and heads pickled before tempering read 1 from the class)."""

    model: LogisticRegression | int  # an int: the one label every example had
    n_labels: int
    temperature: float = 1.0

    @classmethod
    def fit(cls, embeddings: np.ndarray, gold: np.ndarray, n_labels: int, C: float = HEAD_C) -> EmbeddingHead:
        """``gold``: each example's label index among ``n_labels``."""
        return cls(_fitted(np.asarray(embeddings), np.asarray(gold), C), n_labels)

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, n_labels) label probabilities of these (normalised) embeddings."""
        probs = _probabilities(self.model, np.asarray(embeddings), self.n_labels)
        return probs if self.temperature == 1.0 else with_temperature(probs, self.temperature)


def cross_fitted(embeddings: np.ndarray, gold: np.ndarray, n_labels: int, groups: np.ndarray, seed: int = 0,
                 folds: int = FOLDS, C: float = HEAD_C) -> np.ndarray:
    """(n, n_labels): each example's probabilities from an embedding head fitted on the folds that do not hold
    it; ``groups``: per example, its near-twin group (``near_twins.twin_components``), kept in one fold."""
    return cross_fitted_with(lambda x, y, n: EmbeddingHead.fit(x, y, n, C), embeddings, gold, n_labels, groups, seed,
                             folds)


# Decision heads on the language model's own hidden state: the last-token state of an ICL prompt at some
# count k (``service/hidden_states.py`` reads it from vLLM), in place of the label tokens' probabilities.


@dataclass(frozen=True)
class CentroidHead:
    """Hidden Calibration (Cho et al., 2025): each label's centroid of the training states; an input takes the
    nearest. Probabilities: a softmax of minus half the squared distances over a shared variance per dimension
    (the states' mean squared distance to their own label's centroid, per dimension), the Gaussian reading of the
    same rule."""

    centroids: np.ndarray  # (n_labels, d); a label no example had is never chosen
    present: np.ndarray  # (n_labels,) bool
    variance: float

    @classmethod
    def fit(cls, states: np.ndarray, gold: np.ndarray, n_labels: int) -> CentroidHead:
        states, gold = np.asarray(states, dtype=np.float64), np.asarray(gold)
        centroids = np.zeros((n_labels, states.shape[1]))
        present = np.zeros(n_labels, dtype=bool)
        for label in np.unique(gold):
            centroids[label] = states[gold == label].mean(axis=0)
            present[label] = True
        spread = float(np.mean((states - centroids[gold]) ** 2))
        return cls(centroids, present, max(spread, 1e-12))

    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        states = np.asarray(states, dtype=np.float64)
        squared = ((states[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        logits = np.where(self.present, -squared / (2 * self.variance), -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class HiddenLinearHead:
    """FADS-ICL's read-out: a logistic regression on the standardised hidden state (its norm is about 40 and
    uneven across dimensions, which one C does not suit unscaled), balanced class weights as the embedding
    head's."""

    mean: np.ndarray
    scale: np.ndarray
    head: EmbeddingHead

    @classmethod
    def fit(cls, states: np.ndarray, gold: np.ndarray, n_labels: int, C: float = HEAD_C) -> HiddenLinearHead:
        states = np.asarray(states, dtype=np.float64)
        mean, scale = states.mean(axis=0), states.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        # Standardised, the vector's norm grows with the root of its size: divide by it, so that C means what
        # it does for the unit-length embeddings.
        scale = scale * np.sqrt(states.shape[1])
        return cls(mean, scale, EmbeddingHead.fit((states - mean) / scale, gold, n_labels, C))

    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        return self.head.predict_proba((np.asarray(states, dtype=np.float64) - self.mean) / self.scale)


@dataclass(frozen=True)
class KnnPromptingHead:
    """kNN Prompting (Xu et al., 2023): every training example's next-token distribution under its prompt is an
    anchor; an input takes the labels of the ``neighbours`` anchors nearest in KL divergence (anchor to input).
    Features are log-probabilities over a vocabulary (all of it, or the tokens kept by ``vocabulary_subset``).
    Probabilities: the neighbours' vote shares, each label's share smoothed by one vote over all labels."""

    anchors: np.ndarray  # (n, V) log-probabilities
    gold: np.ndarray
    n_labels: int
    neighbours: int = 8

    @classmethod
    def fit(cls, logprobs: np.ndarray, gold: np.ndarray, n_labels: int, neighbours: int = 8) -> KnnPromptingHead:
        return cls(np.asarray(logprobs, dtype=np.float32), np.asarray(gold), n_labels, neighbours)

    def divergences(self, logprobs: np.ndarray) -> np.ndarray:
        """(n queries, n anchors): KL(anchor || query)."""
        anchors = self.anchors
        p = np.exp(anchors)
        own = (p * anchors).sum(axis=1)
        return own[None, :] - np.asarray(logprobs, dtype=np.float32) @ p.T

    def predict_proba(self, logprobs: np.ndarray) -> np.ndarray:
        divergence = self.divergences(logprobs)
        k = min(self.neighbours, divergence.shape[1])
        nearest = np.argpartition(divergence, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(divergence), self.n_labels))
        for j in range(k):
            votes[np.arange(len(votes)), self.gold[nearest[:, j]]] += 1.0
        votes += 1.0 / self.n_labels
        return votes / votes.sum(axis=1, keepdims=True)


def next_token_logprobs(states: np.ndarray, output_embeddings: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(n, V) float32 log-softmax of the next-token logits a tied output embedding makes of final hidden
    states (after the model's last norm, as vLLM's last-token pooling returns them)."""
    out = np.empty((len(states), len(output_embeddings)), dtype=np.float32)
    weights = np.asarray(output_embeddings, dtype=np.float32)
    for start in range(0, len(states), chunk):
        logits = np.asarray(states[start:start + chunk], dtype=np.float32) @ weights.T
        logits -= logits.max(axis=1, keepdims=True)
        out[start:start + chunk] = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return out


def vocabulary_subset(logprobs: np.ndarray, top: int = 64) -> np.ndarray:
    """The token ids among any row's ``top`` most likely: the vocabulary kNN Prompting's anchors keep when the
    whole distribution is too large to store, renormalised over it (``restricted``)."""
    best = np.argpartition(-logprobs, top - 1, axis=1)[:, :top]
    return np.unique(best)


def restricted(logprobs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    kept = logprobs[:, tokens]
    top = kept.max(axis=1, keepdims=True)
    return kept - top - np.log(np.exp(kept - top).sum(axis=1, keepdims=True))


# The heads on the model's hidden state, by name (the service serves the linear one, on the state joined with
# the embedding: ``controller.hidden_fit``; bench/hidden_heads.py measures them all).
DECISION_HEADS: dict[str, Any] = {"centroid": CentroidHead, "hidden-linear": HiddenLinearHead,
                                  "knn-prompting": KnnPromptingHead}


def cross_fitted_with(fit: Callable[[np.ndarray, np.ndarray, int], Any], features: np.ndarray, gold: np.ndarray,
                      n_labels: int, groups: np.ndarray, seed: int = 0, folds: int = FOLDS) -> np.ndarray:
    """(n, n_labels): each example's probabilities from a head (``fit(features, gold, n_labels)``, with
    ``predict_proba``) fitted on the folds that do not hold it, each near-twin group (``groups``) in one fold."""
    features, gold, groups = np.asarray(features), np.asarray(gold), np.asarray(groups)
    splits = min(folds, len(np.unique(groups)))
    if splits < 2:
        raise ValueError("cross-fitting needs at least two groups of examples")
    out = np.zeros((len(gold), n_labels))
    for train, test in GroupKFold(n_splits=splits, shuffle=True, random_state=seed).split(features, gold, groups):
        out[test] = fit(features[train], gold[train], n_labels).predict_proba(features[test])
    return out
