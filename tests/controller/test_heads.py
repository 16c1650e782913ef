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


def test_the_hidden_state_heads_learn_the_labels_and_give_every_task_label_a_column():
    from controller.heads import CentroidHead, HiddenLinearHead

    vectors, gold = _clusters(300, 3, seed=1)
    states = 40.0 * vectors + 3.0  # the size and offset of a model's hidden state
    for head_class in (CentroidHead, HiddenLinearHead):
        head = head_class.fit(states[:200], gold[:200], 4)
        probs = head.predict_proba(states[200:])
        assert probs.shape == (100, 4) and np.allclose(probs.sum(axis=1), 1) and (probs[:, 3] == 0).all()
        assert macro_f1(gold[200:], probs.argmax(axis=1), 3) > 0.9, head_class


def test_the_nearest_centroid_is_the_most_probable_label():
    from controller.heads import CentroidHead

    states = np.array([[0.0, 0.0], [0.2, 0.0], [4.0, 0.0], [4.2, 0.0]])
    head = CentroidHead.fit(states, np.array([0, 0, 1, 1]), 2)
    probs = head.predict_proba(np.array([[1.0, 0.0], [3.0, 5.0], [2.1, 0.0]]))
    assert probs.argmax(axis=1).tolist() == [0, 1, 1] and probs[0, 0] > probs[2, 1] > 0.5


def test_knn_prompting_votes_the_labels_of_the_nearest_distributions():
    from controller.heads import KnnPromptingHead, next_token_logprobs, restricted, vocabulary_subset

    rng = np.random.default_rng(0)
    vocabulary = rng.normal(size=(50, 8))  # a tied output embedding
    centres = rng.normal(size=(2, 8)) * 3
    gold = np.arange(40) % 2
    states = centres[gold] + 0.3 * rng.normal(size=(40, 8))
    logprobs = next_token_logprobs(states, vocabulary)
    assert logprobs.shape == (40, 50) and np.allclose(np.exp(logprobs).sum(axis=1), 1, atol=1e-5)
    head = KnnPromptingHead.fit(logprobs[:30], gold[:30], 2, neighbours=3)
    assert (np.diag(head.divergences(logprobs[:30])) < 1e-4).all()  # each anchor is nearest itself
    assert (head.predict_proba(logprobs[30:]).argmax(axis=1) == gold[30:]).all()
    kept = vocabulary_subset(logprobs[:30], top=5)
    small = restricted(logprobs, kept)
    assert small.shape == (40, len(kept)) and np.allclose(np.exp(small).sum(axis=1), 1, atol=1e-5)
    restricted_head = KnnPromptingHead.fit(small[:30], gold[:30], 2, neighbours=3)
    assert (restricted_head.predict_proba(small[30:]).argmax(axis=1) == gold[30:]).all()


def test_cross_fitting_any_head_keeps_near_twins_out_of_their_own_judge():
    from controller.heads import cross_fitted_with

    seen: list[tuple[set[int], set[int]]] = []

    class Spy:
        """A head that remembers which examples (feature 0: the example's group) it was fitted on and judged."""

        def __init__(self, groups: set[int]) -> None:
            self.groups = groups

        @classmethod
        def fit(cls, features, gold, n_labels):
            return cls({int(g) for g in features[:, 0]})

        def predict_proba(self, features):
            seen.append((self.groups, {int(g) for g in features[:, 0]}))
            return np.full((len(features), 2), 0.5)

    groups = np.repeat(np.arange(30), 2)
    probs = cross_fitted_with(Spy.fit, groups[:, None].astype(float), groups % 2, 2, groups)
    assert probs.shape == (60, 2) and len(seen) == 5
    assert all(not (fitted & judged) for fitted, judged in seen)
    assert set().union(*(judged for _, judged in seen)) == set(range(30))
