"""The approximate index: recall against exact search, updates in place, and when it leaves search to exact."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controller.ann import NeighbourIndex
from controller.pool import LabeledPool
from controller.retrieval import knn, pool_similarities, similarities_to_pool


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return _unit(centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim)))


def _pool(embeddings: np.ndarray, keys: np.ndarray, index: NeighbourIndex | None) -> LabeledPool:
    n = len(embeddings)
    return LabeledPool(ids=[f"e{k}" for k in keys], inputs=[{"text": str(k)} for k in keys], labels=["a"] * n,
                       embeddings=embeddings, keys=keys, index=index)


def test_candidates_recall_the_exact_neighbours_and_carry_exact_similarities():
    embeddings, queries = _clustered(3000), _clustered(50, seed=1)
    keys = np.arange(10, 3010, dtype=np.int64)
    index = NeighbourIndex(min_pool=100, candidates=32, background=False)
    approx = index.similarities(queries, keys, embeddings)
    exact = pool_similarities(queries, embeddings, len(queries))
    assert approx.shape == exact.shape and index.ready
    found = np.isfinite(approx)
    assert (found.sum(axis=1) == 32).all()
    assert np.allclose(approx[found], exact[found], atol=1e-5)
    recall = np.mean([len(set(knn(a, 4).tolist()) & set(knn(e, 4).tolist())) / 4
                      for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_small_pools_are_searched_exactly():
    embeddings = _clustered(50)
    index = NeighbourIndex(min_pool=100, candidates=8, background=False)
    assert index.similarities(embeddings[:2], np.arange(50), embeddings) is None and not index.ready
    pool = _pool(embeddings, np.arange(50), index)
    exact = pool_similarities(embeddings[:2], embeddings, 2)
    assert np.array_equal(similarities_to_pool(embeddings[:2], pool, 2), exact)


def test_the_first_search_builds_in_the_background_from_the_newest_pool():
    embeddings = _clustered(600)
    keys = np.arange(600, dtype=np.int64)
    index = NeighbourIndex(min_pool=100, candidates=8)
    index.update(keys[:500], embeddings[:500])
    index.update(keys, embeddings, added=keys[500:], vectors=embeddings[500:])  # before any build: remembered
    assert index.similarities(embeddings[:1], keys[:500], embeddings[:500]) is None  # an older pool asks first
    deadline = time.monotonic() + 60
    while not index.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index.ready and len(index) == 600


def test_rows_added_and_removed_in_place():
    embeddings = _clustered(1200)
    keys = np.arange(1200, dtype=np.int64) * 3
    index = NeighbourIndex(min_pool=100, candidates=8, background=False)
    index.build(keys[:1000], embeddings[:1000])
    index.update(keys, embeddings, added=keys[1000:], vectors=embeddings[1000:], removed=keys[:10])
    kept = np.r_[10:1200]
    approx = index.similarities(embeddings[kept[-5:]], keys[kept], embeddings[kept])
    assert approx is not None
    assert [int(knn(row, 1)[0]) for row in approx] == list(range(len(kept) - 5, len(kept)))  # each finds itself
    # A pool older than the index's rows (it lacks the added ones) is answered exactly, not wrongly.
    assert index.similarities(embeddings[:3], keys[:1000], embeddings[:1000]) is None


def test_a_pool_with_an_index_retrieves_what_exact_search_does_nearly_always():
    embeddings, queries = _clustered(2000, seed=3), _clustered(40, seed=4)
    pool = _pool(embeddings, np.arange(2000), NeighbourIndex(min_pool=1000, candidates=64, background=False))
    approx = similarities_to_pool(queries, pool, len(queries))
    exact = pool_similarities(queries, embeddings, len(queries))
    same = np.mean([knn(a, 4).tolist() == knn(e, 4).tolist() for a, e in zip(approx, exact, strict=True)])
    assert same >= 0.9


@pytest.mark.parametrize("n", [50, 3000])
def test_knn_breaks_ties_as_a_full_stable_sort_does(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        similarities = rng.integers(0, 6, size=n).astype(np.float32) / 5  # many ties
        similarities[rng.integers(0, n, 5)] = -np.inf
        for k in (1, 4, 16):
            assert knn(similarities, k).tolist() == np.argsort(-similarities, kind="stable")[:k].tolist()


def test_mmr_picks_among_an_approximate_search_candidates():
    from controller.retrieval import diverse

    embeddings = _clustered(500, seed=5)
    similarities = pool_similarities(embeddings[:1], embeddings, 1)[0]
    candidates = np.argsort(-similarities)[:20]
    sparse = np.full_like(similarities, -np.inf)
    sparse[candidates] = similarities[candidates]
    picked = diverse(sparse, embeddings, 4)
    assert set(picked.tolist()) <= set(candidates.tolist()) and len(set(picked.tolist())) == 4
    sub = np.sort(candidates)
    assert picked.tolist() == sub[diverse(similarities[sub], embeddings[sub], 4)].tolist()
