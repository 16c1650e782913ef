"""Selective annotation: which unlabeled examples are worth labeling, from their embeddings alone.

- vote-k (Su et al. 2022, fast vote-k of xlang-ai/icl-selective-annotation): each example votes for its k
  nearest neighbours; greedily pick the example with the highest vote score, where a voter that already
  voted for s picked examples counts 10^-s, and picked examples no longer vote.
- IDEAL (Zhang et al. 2024, skzhang1/IDEAL): a directed kNN graph (edge i -> j for j among i's k nearest,
  weight sim(i, j) normalised over i's neighbours); greedily pick the example whose addition most increases
  the expected number of examples reached under the independent-cascade model, the first pick being the
  node of largest out-degree. The expectation is estimated on fixed Monte Carlo samples of live edges
  (common random numbers, so greedy steps compare like with like), with reachability as bitsets.
- two-stage vote-k (the reference's "votek"): vote-k picks a first few (10); the model, prompted with
  those as demonstrations, classifies every other example; ranked least confident first, the first 90% of
  the pool is split into as many equal buckets as picks remain, and each bucket gives its highest vote score.
  The engine work sits between the two stages (``votek_first_stage``, ``votek_second_stage``).
- random: a seeded sample.
All return pool row indices in selection order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from controller.planning import PromptBuilder
from controller.predictor import Predictor
from controller.scoring import LabelScorer

VOTEK_K = 150
IDEAL_K = 10
IDEAL_SAMPLES = 10


def knn_graph(embeddings: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, similarities), each (n, k'): every row's k' = min(k, n - 1) most similar other rows,
    most similar first (ties: lower index first). Computed in chunks: memory stays O(chunk * n)."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    k = min(k, n - 1)
    neighbours = np.zeros((n, max(k, 0)), dtype=np.int64)
    sims = np.zeros((n, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return neighbours, sims
    for start in range(0, n, chunk):
        block = x[start:start + chunk] @ x.T
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = -np.inf  # not one's own neighbour
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(block, part, axis=1)
        order = np.lexsort((part, -part_sims), axis=1)
        neighbours[start:start + len(rows)] = np.take_along_axis(part, order, axis=1)
        sims[start:start + len(rows)] = np.take_along_axis(part_sims, order, axis=1)
    return neighbours, sims


def _votes(embeddings: np.ndarray, k: int) -> sparse.csr_matrix:
    """votes_for[j, i] = 1 when i votes for j (j is among i's k nearest)."""
    n = len(embeddings)
    neighbours, _ = knn_graph(embeddings, k)
    kk = neighbours.shape[1]
    votes = sparse.csr_matrix((np.ones(n * kk), (np.repeat(np.arange(n), kk), neighbours.ravel())), shape=(n, n))
    return votes.T.tocsr()


def votek(embeddings: np.ndarray, budget: int, k: int = VOTEK_K) -> list[int]:
    n = len(embeddings)
    budget = min(budget, n)
    votes_for = _votes(embeddings, k)
    n_votes = np.asarray(votes_for.sum(axis=1)).ravel()
    times = np.zeros(n)  # how many picked examples each voter has voted for
    picked = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(budget):
        weight = np.where(picked, 0.0, 10.0 ** -times)
        score = votes_for @ weight
        score[picked] = -np.inf
        score[n_votes == 0] = -np.inf  # the reference only ranks examples that got votes
        if not np.isfinite(score).any():  # fewer voted examples than the budget: fill in index order
            score = np.where(picked, -np.inf, 0.0)
        # Highest score; ties to the example with more votes, then the lower index.
        best = int(np.lexsort((np.arange(n), -n_votes, -score))[0])
        order.append(best)
        picked[best] = True
        times[votes_for[best].indices] += 1
    return order


TWO_STAGE_FIRST = 10  # the reference's first-stage size (its --batch_size)


def votek_first_stage(embeddings: np.ndarray, budget: int, k: int = VOTEK_K) -> list[int]:
    """The examples to label before asking the model anything: vote-k's first picks."""
    return votek(embeddings, min(budget, TWO_STAGE_FIRST), k)


def votek_second_stage(embeddings: np.ndarray, first: list[int], confidence: np.ndarray, budget: int,
                       k: int = VOTEK_K, seed: int = 0) -> list[int]:
    """The remaining picks, given the model's confidence in its answer for every example (demonstrations: the
    first picks, labeled). Ranked least confident first, the first 90% of the pool is cut into
    ``budget - len(first)`` equal buckets; each gives its example of highest vote score, voters discounted by
    10^-s for the s picks so far they voted for. Buckets too small to fill the budget: the rest at random."""
    n = len(embeddings)
    budget = min(budget, n)
    order = list(first)
    remaining = budget - len(order)
    if remaining <= 0:
        return order[:budget]
    votes_for = _votes(embeddings, k)
    picked = np.zeros(n, dtype=bool)
    picked[order] = True
    times = np.zeros(n)
    for j in order:
        times[votes_for[j].indices] += 1
    score_order = np.where(picked, np.inf, np.asarray(confidence, dtype=np.float64))
    ranked = np.argsort(score_order, kind="stable")  # least confident first, picked ones last
    width = int(n * 0.9 / remaining)
    t = 0
    while len(order) < budget and width > 0 and t * width < n:
        bucket = ranked[t * width:(t + 1) * width]
        bucket = bucket[~picked[bucket]]
        t += 1
        if not len(bucket):
            continue
        weight = np.where(picked, 0.0, 10.0 ** -times)
        scores = votes_for[bucket] @ weight
        best = int(bucket[int(np.argmax(scores))])  # ties: the first in confidence order, as the reference
        order.append(best)
        picked[best] = True
        times[votes_for[best].indices] += 1
    if len(order) < budget:
        rest = np.flatnonzero(~picked)
        order += [int(i) for i in np.random.default_rng(seed).choice(rest, budget - len(order), replace=False)]
    return order


async def model_confidence(builder: PromptBuilder, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray,
                           labels: Sequence[str], k: int, seed: int, scorer: LabelScorer, chunk: int = 64,
                           progress: Callable[[float], None] = lambda _: None) -> np.ndarray:
    """Two-stage vote-k's engine work: for each query, the log-probability of the model's own answer when
    prompted with its k nearest labeled examples (uncalibrated). Low means unsure."""
    out = np.zeros(len(queries))
    predictor = Predictor.uncalibrated(builder, labels, "knn", k, seed)
    async for part, result in predictor.predict_in_chunks(queries, embeddings, scorer, chunk):
        out[part] = [np.log(max(p.probs.values())) for p in result.predictions]
        progress(part.stop / len(queries))
    return out


def _live_edge_reach(neighbours: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Monte Carlo sample: each edge is live with its weight's probability; returns (n, words) bitsets
    of the nodes each node reaches (itself included) over live edges."""
    n, kk = neighbours.shape
    live = rng.random((n, kk)) < weights
    src = np.repeat(np.arange(n), kk)[live.ravel()]
    dst = neighbours.ravel()[live.ravel()]
    graph = sparse.csr_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=True, connection="strong")
    words = (n + 63) // 64
    members = np.zeros((n_comp, words), dtype=np.uint64)
    bits = np.left_shift(np.uint64(1), (np.arange(n) % 64).astype(np.uint64))
    np.bitwise_or.at(members, (comp, np.arange(n) // 64), bits)
    # Reach on the condensed DAG, sinks first (Kahn's algorithm on remaining out-degrees).
    cond = sparse.csr_matrix((np.ones(len(src), dtype=np.int8), (comp[src], comp[dst])), shape=(n_comp, n_comp))
    cond.setdiag(0)
    cond.eliminate_zeros()
    cond.data[:] = 1
    preds = cond.T.tocsr()
    remaining = np.diff(cond.indptr)
    reach = members.copy()
    ready = list(np.flatnonzero(remaining == 0))
    while ready:
        c = ready.pop()
        succ = cond.indices[cond.indptr[c]:cond.indptr[c + 1]]
        if len(succ):
            reach[c] |= np.bitwise_or.reduce(reach[succ], axis=0)
        for p in preds.indices[preds.indptr[c]:preds.indptr[c + 1]]:
            remaining[p] -= 1
            if remaining[p] == 0:
                ready.append(p)
    return reach[comp]


def ideal(embeddings: np.ndarray, budget: int, k: int = IDEAL_K, samples: int = IDEAL_SAMPLES,
          seed: int = 0) -> list[int]:
    n = len(embeddings)
    budget = min(budget, n)
    if n == 0 or budget == 0:
        return []
    neighbours, sims = knn_graph(embeddings, k)
    if neighbours.shape[1] == 0:
        return list(range(budget))
    sims = np.clip(sims, 1e-6, None)
    weights = sims / sims.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    reach = np.stack([_live_edge_reach(neighbours, weights, rng) for _ in range(samples)])  # (S, n, words)
    covered = np.zeros((samples, reach.shape[2]), dtype=np.uint64)
    picked = np.zeros(n, dtype=bool)
    # The reference starts from the node of largest out-degree: in a kNN graph all tie, so the first node.
    order = [0]
    picked[0] = True
    covered |= reach[:, 0]
    # Lazy greedy (CELF): marginal gains only shrink as the covered set grows.
    gains = np.bitwise_count(reach & ~covered[:, None, :]).sum(axis=(0, 2)).astype(np.float64)
    gains[picked] = -np.inf
    stale = np.zeros(n, dtype=bool)
    while len(order) < budget:
        best = int(np.argmax(gains))
        if stale[best]:
            gains[best] = float(np.bitwise_count(reach[:, best] & ~covered).sum())
            stale[best] = False
            continue
        order.append(best)
        picked[best] = True
        covered |= reach[:, best]
        gains[best] = -np.inf
        stale[~picked] = True
    return order


def random_selection(n: int, budget: int, seed: int = 0) -> list[int]:
    return [int(i) for i in np.random.default_rng(seed).permutation(n)[:min(budget, n)]]
