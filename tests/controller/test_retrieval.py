import numpy as np

from controller.retrieval import cosine_similarities, diverse, knn, random_demos, select_demos


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
    assert select_demos("knn", sims, pool, 3).tolist() == [2, 3, 0]


def test_random_is_one_seeded_set_shared_by_every_query_and_nested_over_k():
    a = random_demos(100, 5, seed=0)
    assert a.tolist() == random_demos(100, 5, seed=0).tolist()
    assert len(set(a.tolist())) == 5
    assert a.tolist() != random_demos(100, 5, seed=1).tolist()
    assert random_demos(100, 8, seed=0)[:5].tolist() == a.tolist()  # a smaller k is a prefix of a larger one
    pool = _unit(np.random.default_rng(0).normal(size=(100, 4)))
    sims = cosine_similarities(_unit([[1, 0, 0, 0], [0, 1, 0, 0]]), pool)
    # The same set, in the same (drawn) order, whatever the query: one shared prompt prefix.
    assert select_demos("random", sims[0], pool, 5).tolist() == select_demos("random", sims[1], pool, 5).tolist()
    assert select_demos("random", sims[0], pool, 5, seed=3).tolist() == random_demos(100, 5, seed=3).tolist()


def test_diverse_skips_near_duplicates():
    pool = _unit([[1, 0, 0], [1, 0.01, 0], [0.7, 0.7, 0], [0, 0, 1]])
    sims = cosine_similarities(_unit([[1, 0.2, 0]]), pool)[0]
    assert knn(sims, 2).tolist() == [1, 0]  # the two near-duplicates
    picked = diverse(sims, pool, 2, relevance_weight=0.5)
    assert picked[0] == 1 and picked[1] == 2  # the second pick avoids the duplicate of the first


def test_k_larger_than_pool_and_zero():
    pool = _unit([[1, 0]])
    sims = cosine_similarities(_unit([[1, 0]]), pool)[0]
    assert select_demos("random", sims, pool, 3).tolist() == [0]
    assert select_demos("diverse", sims, pool, 0).tolist() == []
