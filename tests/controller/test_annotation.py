"""Selective annotation on graphs small enough to work out by hand."""

from collections import defaultdict

import numpy as np

from controller.annotation import (
    ideal,
    knn_graph,
    random_selection,
    votek,
    votek_first_stage,
    votek_second_stage,
)


def at_angles(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_knn_graph_excludes_self_and_orders_by_similarity():
    neighbours, sims = knn_graph(at_angles([0, 1, 2, 3, 4, 90, 91, 92]), 2)
    assert neighbours[0].tolist() == [1, 2]
    assert sorted(neighbours[1].tolist()) == [0, 2]  # both 1 degree away
    assert neighbours[4].tolist() == [3, 2]
    assert neighbours[5].tolist() == [6, 7]
    assert sims[0, 0] > sims[0, 1]


def test_votek_worked_example():
    # Cluster A at 0..4 degrees, cluster B at 90..92; k = 2.
    # Votes: A2 gets 4 (from A0, A1, A3, A4), A1, A3 and every B node get 2, A0 and A4 get 1.
    # 1st: A2. Its voters now count 10^-1. 2nd: B nodes score 2 against A's 0.1: B5 (lowest index).
    # 3rd: everything scores 0.1; among the 2-vote examples the lowest index is A1.
    assert votek(at_angles([0, 1, 2, 3, 4, 90, 91, 92]), 3, k=2) == [2, 5, 1]


def test_votek_budget_larger_than_voted_pool():
    order = votek(at_angles([0, 50, 100]), 3, k=1)
    assert sorted(order) == [0, 1, 2]


def test_ideal_worked_example_with_certain_edges():
    # k = 1: each node's one edge has weight 1, so the cascade is deterministic.
    # Nearest neighbours: 0->1, 1->0, 2->1, 3->2, 4->3, so node 4 reaches everyone, 3 reaches {3,2,1,0}...
    # IDEAL starts at node 0 (covers {0, 1}); node 4 adds {2, 3, 4}; then nothing adds more: lowest index, 1.
    assert ideal(at_angles([0, 10, 30, 60, 100]), 3, k=1, samples=4) == [0, 4, 1]


def test_ideal_second_pick_covers_the_other_cluster():
    embeddings = at_angles([0, 2, 4, 90, 91, 92, 93, 94])
    order = ideal(embeddings, 2, k=2, samples=200, seed=1)
    assert order[0] == 0 and order[1] >= 3


def test_random_is_seeded():
    assert random_selection(10, 4, seed=3) == random_selection(10, 4, seed=3)
    assert len(set(random_selection(10, 4, seed=3))) == 4
    assert random_selection(3, 10) and len(random_selection(3, 10)) == 3


def test_selection_is_fast_on_a_large_pool():
    import time

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 64))
    x = (centers[rng.integers(0, 50, 3000)] + 0.3 * rng.normal(size=(3000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    began = time.perf_counter()
    assert len(set(votek(x, 100))) == 100
    assert len(set(ideal(x, 100))) == 100
    assert time.perf_counter() - began < 60


def test_two_stage_votek_worked_example():
    # Same graph as above (k = 2); the first stage (vote-k) picked A2, B5, A1; one pick remains, so the
    # single bucket is the 7 least confident of 8 (int(8 * 0.9 / 1) = 7). Remaining voters' weights: A0, A1, A3,
    # A4 voted for A2 (picked, so 10^-1); B6 and B7 voted for B5 (10^-1); A0 also voted for A1 (10^-2).
    # Unpicked: A0 (voters A1 -> 0.1), A3 (voters A2 -> picked, so 0; A4 -> 0.1), A4 (A3 -> 0.1), B6 (B5 picked
    # -> 0, B7 -> 0.1), B7 (B5 -> 0, B6 -> 0.1). All tie at 0.1: the least confident among them wins.
    embeddings = at_angles([0, 1, 2, 3, 4, 90, 91, 92])
    first = votek_first_stage(embeddings, 3, k=2)
    assert first == [2, 5, 1]
    confidence = np.array([0.9, 0.1, 0.1, 0.5, 0.8, 0.1, 0.95, 0.3])  # B7 the least confident unpicked
    assert votek_second_stage(embeddings, first, confidence, 4, k=2) == [2, 5, 1, 7]
    confidence[7], confidence[3] = 0.99, 0.2  # now A3 is
    assert votek_second_stage(embeddings, first, confidence, 4, k=2) == [2, 5, 1, 3]


def reference_second_stage(embeddings, first, confidence, budget, k):
    """A literal port of the reference's loop (dictionaries, one bucket at a time), for comparison."""
    n = len(embeddings)
    neighbours, _ = knn_graph(embeddings, k)
    vote_stat = defaultdict(list)
    for i in range(n):
        for j in neighbours[i]:
            vote_stat[int(j)].append(i)
    selected = list(first)
    times = defaultdict(int)
    for p in selected:
        for v in vote_stat[p]:
            times[v] += 1
    scores = {i: (float("inf") if i in selected else confidence[i]) for i in range(n)}
    ranked = sorted(scores.items(), key=lambda x: x[1])
    width = int(n * 0.9 / (budget - len(selected)))
    t = 0
    while len(selected) < budget and t * width < len(ranked):
        cur = {}
        for idx, _ in ranked[t * width:(t + 1) * width]:
            if idx in selected:
                continue
            cur[idx] = sum(10.0 ** -times[v] for v in vote_stat.get(idx, []) if v not in selected)
        t += 1
        if not cur:
            continue
        best = max(cur.items(), key=lambda x: x[1])[0]
        selected.append(best)
        for v in vote_stat[best]:
            times[v] += 1
    return selected


def test_two_stage_votek_matches_the_reference_loop_on_random_pools():
    rng = np.random.default_rng(0)
    for trial in range(5):
        emb = rng.normal(size=(80, 8)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        first = votek_first_stage(emb, 30, k=6)
        assert len(first) == 10
        confidence = rng.random(80)
        got = votek_second_stage(emb, first, confidence, 30, k=6)
        assert got == reference_second_stage(emb, first, confidence, 30, k=6), trial
        assert len(set(got)) == 30
