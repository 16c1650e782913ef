"""Demonstration retrieval over a labeled pool. Retrievers return pool indices; rendering is the template's job.

Embeddings are expected L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

Selection = Literal["knn", "random", "diverse"]


def cosine_similarities(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(n_queries, n_pool) cosine similarities of normalised embeddings."""
    return np.asarray(queries, dtype=np.float32) @ np.asarray(pool, dtype=np.float32).T


def knn(similarities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar pool items, most similar first (ties: lower index first)."""
    k = min(k, similarities.shape[0])
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    return np.argsort(-similarities, kind="stable")[:k]


@lru_cache(maxsize=16)
def _random_order(n_pool: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n_pool)
    order.flags.writeable = False  # shared between callers
    return order


def random_demos(n_pool: int, k: int, seed: int) -> np.ndarray:
    """The first k of the pool's seeded random order: every query under a seed gets the same set (the random
    baseline as Zhao et al. and Fei et al. run it), and a smaller k gets a prefix of a larger k's set. A shared
    set is also a shared prompt prefix for vLLM's cache and one label-bias estimate for calibration."""
    return _random_order(n_pool, seed)[:min(k, n_pool)].astype(np.int64)


def shares_one_set(selection: Selection) -> bool:
    """Whether every query under a seed gets the same demonstrations (random): nothing is retrieved per query,
    and the set is one prompt prefix and one label-bias estimate."""
    return selection == "random"


def diverse(similarities: np.ndarray, pool: np.ndarray, k: int, relevance_weight: float = 0.5) -> np.ndarray:
    """Maximal marginal relevance: each pick maximises
    ``relevance_weight * sim(query, d) - (1 - relevance_weight) * max sim(d, picked)``."""
    n = similarities.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf, dtype=np.float32)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = relevance_weight * similarities - (1.0 - relevance_weight) * penalty
        score = np.where(available, score, -np.inf)
        best = int(np.argmax(score))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, pool @ pool[best])
    return np.asarray(picked, dtype=np.int64)


def select_demos(
    selection: Selection,
    similarities: np.ndarray,
    pool: np.ndarray,
    k: int,
    seed: int = 0,
) -> np.ndarray:
    """Pool indices for one query, ordered for the prompt: retrieved ones least similar first, most similar
    nearest the query; random ones in their drawn order, the same for every query."""
    if shares_one_set(selection):
        return random_demos(similarities.shape[0], k, seed)
    if selection == "knn":
        chosen = knn(similarities, k)
    elif selection == "diverse":
        chosen = diverse(similarities, pool, k)
    else:
        raise ValueError(f"unknown selection {selection!r}")
    return chosen[np.argsort(similarities[chosen], kind="stable")]
