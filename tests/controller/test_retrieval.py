import numpy as np
import pytest

from controller.retrieval import (
    DiverseRetriever,
    KnnRetriever,
    RandomRetriever,
    cosine_similarities,
    diverse,
    knn,
    per_query_seeds,
    pool_similarities,
    random_demos,
    retriever_for,
)


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_knn_returns_most_similar_first():
    pool = _unit([[1, 0], [0, 1], [1, 1], [1, 0.1]])
    sims = cosine_similarities(_unit([[1, 0]]), pool)[0]
    assert knn(sims, 2).tolist() == [0, 3]
    assert knn(sims, 10).tolist() == [0, 3, 2, 1]


def test_select_orders_most_similar_nearest_the_query():
    pool = _unit([[1, 0], [0, 1], [1, 1], [1, 0.1]])
    sims = cosine_similarities(_unit([[1, 0]]), pool)[0]
    assert KnnRetriever().select(sims, pool, 3) == [2, 3, 0]


def test_random_is_one_seeded_set_shared_by_every_query_and_nested_over_k():
    a = random_demos(100, 5, seed=0)
    assert a.tolist() == random_demos(100, 5, seed=0).tolist()
    assert len(set(a.tolist())) == 5
    assert a.tolist() != random_demos(100, 5, seed=1).tolist()
    assert random_demos(100, 8, seed=0)[:5].tolist() == a.tolist()  # a smaller k is a prefix of a larger one
    pool = _unit(np.random.default_rng(0).normal(size=(100, 4)))
    sims = cosine_similarities(_unit([[1, 0, 0, 0], [0, 1, 0, 0]]), pool)
    # The same set, in the same (drawn) order, whatever the query: one shared prompt prefix.
    random = RandomRetriever()
    assert random.select(sims[0], pool, 5) == random.select(sims[1], pool, 5)
    assert random.select(sims[0], pool, 5, seed=3) == random_demos(100, 5, seed=3).tolist()


def test_diverse_skips_near_duplicates():
    pool = _unit([[1, 0, 0], [1, 0.01, 0], [0.7, 0.7, 0], [0, 0, 1]])
    sims = cosine_similarities(_unit([[1, 0.2, 0]]), pool)[0]
    assert knn(sims, 2).tolist() == [1, 0]  # the two near-duplicates
    picked = diverse(sims, pool, 2, relevance_weight=0.5)
    assert picked[0] == 1 and picked[1] == 2  # the second pick avoids the duplicate of the first
    assert DiverseRetriever().select(sims, pool, 2) == [2, 1]  # in prompt order: the most similar last


def test_k_larger_than_pool_and_zero():
    pool = _unit([[1, 0]])
    sims = cosine_similarities(_unit([[1, 0]]), pool)[0]
    assert RandomRetriever().select(sims, pool, 3) == [0]
    assert DiverseRetriever().select(sims, pool, 0) == []
    assert KnnRetriever().select(np.zeros(0, dtype=np.float32), np.zeros((0, 2)), 3) == []  # an empty pool


def test_each_selection_says_how_its_sets_behave():
    knn_, random, diverse_ = (retriever_for(s) for s in ("knn", "random", "diverse"))
    assert (knn_.needs_embeddings, knn_.shares_one_set, knn_.label_evidence) == (True, False, True)
    assert (random.needs_embeddings, random.shares_one_set, random.label_evidence) == (False, True, False)
    assert (diverse_.needs_embeddings, diverse_.shares_one_set, diverse_.label_evidence) == (True, False, False)
    # Retrieved sets lose their least similar demonstration (the first); the shared random set its last drawn,
    # so what is left is still a prefix of the order every input shares.
    assert knn_.trim([4, 7, 9]) == [7, 9] and diverse_.trim([4, 7, 9]) == [7, 9]
    assert random.trim([4, 7, 9]) == [4, 7]
    with pytest.raises(ValueError):
        retriever_for("best")


def test_select_all_gives_each_query_its_count_and_seed():
    pool = _unit(np.random.default_rng(1).normal(size=(30, 4)))
    sims = pool_similarities(_unit(np.random.default_rng(2).normal(size=(3, 4))), pool, 3)
    rows = RandomRetriever().select_all(sims, pool, [2, 0, 4], [5, 5, 6])
    assert rows[0] == random_demos(30, 2, 5).tolist() and rows[1] == [] and rows[2] == random_demos(30, 4, 6).tolist()
    assert pool_similarities(None, pool, 3).shape == (3, 30) and not pool_similarities(None, pool, 3).any()


def test_per_query_seeds():
    assert per_query_seeds(3, 2) == [3, 3]
    assert per_query_seeds(np.int64(3), 2) == [3, 3]
    assert per_query_seeds([1, 2], 2) == [1, 2]
    with pytest.raises(ValueError):  # a seed per query, or one for all: not a few
        per_query_seeds([1, 2], 3)
