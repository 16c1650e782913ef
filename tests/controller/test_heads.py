"""The embedding head: a linear classifier on the retrieval embeddings, judged by cross-fitting."""

import numpy as np
import pytest

from controller.heads import EmbeddingHead, cross_fitted
from controller.metrics import macro_f1


def _clusters(n: int, n_labels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one centre per label."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_labels, 32))
    gold = rng.integers(0, n_labels, n)
    vectors = centres[gold] + 0.5 * rng.normal(size=(n, 32))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), gold


def test_the_head_learns_the_labels_and_gives_every_task_label_a_column():
    vectors, gold = _clusters(200, 3)
    head = EmbeddingHead.fit(vectors[:150], gold[:150], n_labels=4)  # label 3: in the task, not in the pool
    probs = head.predict_proba(vectors[150:])
    assert probs.shape == (50, 4) and np.allclose(probs.sum(axis=1), 1) and (probs[:, 3] == 0).all()
    assert macro_f1(gold[150:], probs.argmax(axis=1), 3) > 0.9


def test_a_pool_of_one_label_answers_it():
    vectors, _ = _clusters(10, 2)
    probs = EmbeddingHead.fit(vectors, np.full(10, 1), n_labels=2).predict_proba(vectors[:3])
    assert (probs == [[0.0, 1.0]] * 3).all()


def test_cross_fitting_keeps_near_twins_in_one_fold():
    # Random labels, every example twice: only a head that saw an example's copy can answer it.
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(100, 256))  # more dimensions than examples: it can memorise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    gold = rng.integers(0, 2, 100)
    twins, labels = np.vstack([vectors, vectors]), np.concatenate([gold, gold])
    grouped = cross_fitted(twins, labels, 2, groups=np.tile(np.arange(100), 2), C=100.0)
    apart = cross_fitted(twins, labels, 2, groups=np.arange(200), C=100.0)
    assert (apart.argmax(axis=1) == labels).mean() > 0.8  # a copy seen in training answers its twin
    assert (grouped.argmax(axis=1) == labels).mean() < 0.65


def test_cross_fitted_probabilities_are_out_of_fold_and_honest_on_learnable_labels():
    vectors, gold = _clusters(300, 3, seed=2)
    probs = cross_fitted(vectors, gold, 3, groups=np.arange(300), seed=0)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(axis=1), 1)
    assert macro_f1(gold, probs.argmax(axis=1), 3) > 0.85
    with pytest.raises(ValueError):
        cross_fitted(vectors, gold, 3, groups=np.zeros(300))
