"""Demonstration retrieval over a labeled pool: one retriever per selection. Retrievers return pool rows in
prompt order; rendering is the template's job.

Embeddings are expected L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np

from controller.pool import LabeledPool

Selection = Literal["knn", "random", "diverse"]


def cosine_similarities(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(n_queries, n_pool) cosine similarities of normalised embeddings."""
    return np.asarray(queries, dtype=np.float32) @ np.asarray(pool, dtype=np.float32).T


def pool_similarities(query_embeddings: np.ndarray | None, pool_embeddings: np.ndarray, n_queries: int) -> np.ndarray:
    """Every query's similarity to every pool row; zeros where the queries were not embedded (a retriever that
    does not read them) or the pool is empty."""
    if query_embeddings is not None and len(pool_embeddings):
        return cosine_similarities(query_embeddings, pool_embeddings)
    return np.zeros((n_queries, len(pool_embeddings)), dtype=np.float32)


def similarities_to_pool(query_embeddings: np.ndarray | None, pool: LabeledPool, n_queries: int) -> np.ndarray:
    """``pool_similarities``, from the pool's approximate index where it has one that answers (a large pool):
    candidates' exact similarities, -inf to the rows it did not find."""
    if query_embeddings is not None and pool.index is not None and pool.keys is not None and len(pool):
        approximate = pool.index.similarities(query_embeddings, pool.keys, pool.embeddings)
        if approximate is not None:
            return approximate
    return pool_similarities(query_embeddings, pool.embeddings, n_queries)


def knn(similarities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most similar pool items, most similar first (ties: lower index first)."""
    n = similarities.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if n > 8 * k + 64:
        # A full sort reads the pool log n times over. An approximate search leaves its candidates alone finite:
        # sort those. Otherwise keep every row as similar as the k-th (ties included) and sort those. Either
        # way the order is the full stable sort's.
        candidates = np.flatnonzero(similarities > -np.inf)
        if len(candidates) > 8 * k + 64:
            kth = np.partition(similarities, n - k)[n - k]
            candidates = np.flatnonzero(similarities >= kth)
        if len(candidates) >= k:
            return candidates[np.argsort(-similarities[candidates], kind="stable")[:k]]
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


def diverse(similarities: np.ndarray, pool: np.ndarray, k: int, relevance_weight: float = 0.5) -> np.ndarray:
    """Maximal marginal relevance: each pick maximises
    ``relevance_weight * sim(query, d) - (1 - relevance_weight) * max sim(d, picked)``."""
    n = similarities.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    finite = np.isfinite(similarities)
    if not finite.all() and finite.sum() >= k:  # an approximate search's candidates: the rest are not similar
        candidates = np.flatnonzero(finite)
        return candidates[diverse(similarities[candidates], pool[candidates], k, relevance_weight)]
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


def per_query_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed for each of n queries: the one given for all, or those given, one per query."""
    seeds = [int(seed)] * n if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} queries")
    return seeds


class Retriever(ABC):
    """Chooses a query's demonstrations and says how its sets behave in a prompt.

    - ``needs_embeddings``: whether it reads the query's similarity to the pool;
    - ``shares_one_set``: whether every query under a seed gets the same set (one prompt prefix, one bias);
    - ``label_evidence``: whether a set's labels are evidence about the query's own (the nearest examples'
      labels), which calibration would mistake for bias;
    - ``trim``: which demonstration a prompt loses first when it must shrink."""

    selection: ClassVar[Selection]
    needs_embeddings: ClassVar[bool] = True
    shares_one_set: ClassVar[bool] = False
    label_evidence: ClassVar[bool] = False

    @abstractmethod
    def pick(self, similarities: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
        """Pool rows for one query (k > 0)."""

    def in_prompt_order(self, chosen: np.ndarray, similarities: np.ndarray) -> np.ndarray:
        """Least similar first, so the most similar demonstration stands next to the query."""
        return chosen[np.argsort(similarities[chosen], kind="stable")]

    def select(self, similarities: np.ndarray, pool: np.ndarray, k: int, seed: int = 0) -> list[int]:
        """Pool rows for one query, in prompt order."""
        if k <= 0:
            return []
        return [int(r) for r in self.in_prompt_order(self.pick(similarities, pool, k, seed), similarities)]

    def select_all(self, similarities: np.ndarray, pool: np.ndarray, ks: Sequence[int],
                   seeds: Sequence[int]) -> list[list[int]]:
        """Each query's demonstrations, with its own count and seed."""
        return [self.select(similarities[i], pool, k, seed) for i, (k, seed) in enumerate(zip(ks, seeds, strict=True))]

    def trim(self, demo_rows: Sequence[int]) -> list[int]:
        """One demonstration fewer: the least similar, which stands first."""
        return list(demo_rows[1:])


class KnnRetriever(Retriever):
    """The k most similar pool examples (Liu et al. 2022)."""

    selection = "knn"
    label_evidence = True

    def pick(self, similarities: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
        return knn(similarities, k)


class DiverseRetriever(Retriever):
    """Similar but not redundant: maximal marginal relevance."""

    selection = "diverse"

    def pick(self, similarities: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
        return diverse(similarities, pool, k)


class RandomRetriever(Retriever):
    """One seeded set for every query (``random_demos``), in its drawn order."""

    selection = "random"
    needs_embeddings = False
    shares_one_set = True

    def pick(self, similarities: np.ndarray, pool: np.ndarray, k: int, seed: int) -> np.ndarray:
        return random_demos(similarities.shape[0], k, seed)

    def in_prompt_order(self, chosen: np.ndarray, similarities: np.ndarray) -> np.ndarray:
        """As drawn: every query's prompt starts with the same demonstrations."""
        return chosen

    def trim(self, demo_rows: Sequence[int]) -> list[int]:
        """The last drawn goes first, so what is left is still a prefix of the order other inputs share."""
        return list(demo_rows[:-1])

    def shared_set(self, n_pool: int, k: int, seed: int) -> list[int]:
        """The pool rows every query gets with k demonstrations under ``seed``, in prompt order (untrimmed)."""
        return [int(r) for r in random_demos(n_pool, k, seed)]


RETRIEVERS: dict[Selection, Retriever] = {
    r.selection: r for r in (KnnRetriever(), RandomRetriever(), DiverseRetriever())}


def retriever_for(selection: Selection) -> Retriever:
    try:
        return RETRIEVERS[selection]
    except KeyError:
        raise ValueError(f"unknown selection {selection!r}") from None
