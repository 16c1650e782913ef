"""bench/near_twins.py's pure parts: links by cosine and by text, duplicate groups, pair counts, label
disagreement, sample pairs and the k-NN effect, on tiny synthetic embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from bench.near_twins import (
    EXACT,
    NORMALISED,
    analyse,
    band_disagreement,
    cosine_links,
    equal_links,
    graph_stats,
    groups,
    held_back_draws,
    knn_effect,
    knn_votes,
    label_disagreement,
    nearest_other,
    normalised,
    random_pair_disagreement,
    sample_pairs,
)


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def at_angle(cosine: float, side: int = 1) -> list[float]:
    return [cosine, side * float(np.sqrt(1 - cosine**2)), 0.0, 0.0]


# 0 and 1 almost the same (0.995), 2 close to 0 (0.96) on 1's far side (0.93 to 1), 3 and 4 the same vector, 5 alone.
VECTORS = unit([1, 0, 0, 0], at_angle(0.995), at_angle(0.96, side=-1), [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1])
LABELS = ["pos", "pos", "neg", "neg", "pos", "neg"]
SIM = VECTORS @ VECTORS.T


def test_cosine_links_are_symmetric_without_self_loops():
    links = cosine_links(SIM, 0.99)
    assert links.tolist() == links.T.tolist()
    assert not links.diagonal().any()
    assert {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(links, 1)), strict=True)} == {(0, 1), (3, 4)}


def test_groups_are_the_connected_components_of_two_or_more_and_grow_as_the_threshold_falls():
    assert groups(cosine_links(SIM, 0.99)) == [[0, 1], [3, 4]]
    # 2 links to 0 (0.96) but to 1 only at ~0.93: at 0.95 it joins through 0, a chain, one group of three.
    assert groups(cosine_links(SIM, 0.95)) == [[0, 1, 2], [3, 4]]
    assert groups(cosine_links(SIM, 1.01)) == []


def test_graph_stats_count_pairs_groups_members_and_label_disagreement():
    stats = graph_stats(cosine_links(SIM, 0.99), LABELS)
    assert stats == {"pairs": 2, "groups": 2, "in_groups": pytest.approx(4 / 6), "largest_group": 2,
                     "label_differs": pytest.approx(0.5)}
    # At 0.95 the pairs are (0,1), (0,2), (3,4): one of them, (3,4), and (0,2) have different labels.
    wide = graph_stats(cosine_links(SIM, 0.95), LABELS)
    assert (wide["pairs"], wide["groups"], wide["largest_group"]) == (3, 2, 3)
    assert wide["label_differs"] == pytest.approx(2 / 3)
    assert graph_stats(cosine_links(SIM, 1.01), LABELS)["label_differs"] is None


def test_a_reference_graph_reports_the_share_of_its_pairs_caught():
    reference = equal_links(["a", "a", "b", "c", "c", "d"])  # pairs (0,1) and (3,4)
    assert graph_stats(cosine_links(SIM, 0.999), LABELS, reference)["reference_caught"] == pytest.approx(0.5)
    assert graph_stats(cosine_links(SIM, 0.99), LABELS, reference)["reference_caught"] == pytest.approx(1.0)
    assert graph_stats(cosine_links(SIM, 0.99), LABELS, equal_links(list("abcdef")))["reference_caught"] is None


def test_equal_links_and_normalised_text():
    texts = ["It 's great !", "it's great", "It's great!", "not great"]
    assert equal_links(texts).sum() == 0
    assert groups(equal_links([normalised(t) for t in texts])) == [[0, 1, 2]]
    assert normalised("RT @user: Hello,   World_!") == "rtuserhelloworld"


def test_label_disagreement_counts_each_pair_once():
    links = equal_links(["x", "x", "x", "y"])  # pairs (0,1), (0,2), (1,2)
    assert label_disagreement(links, ["a", "a", "b", "b"]) == pytest.approx(2 / 3)
    assert label_disagreement(equal_links(["x", "y"]), ["a", "b"]) is None


def test_random_pair_disagreement_is_the_chance_two_distinct_examples_differ():
    assert random_pair_disagreement(["a", "a", "b", "b"]) == pytest.approx(4 / 6)
    assert random_pair_disagreement(["a", "a", "a"]) == 0.0


def test_nearest_other_leaves_the_diagonal_out():
    nearest = nearest_other(SIM)
    assert nearest[0] == pytest.approx(0.995, abs=1e-5)
    assert nearest[3] == pytest.approx(1.0, abs=1e-6)
    assert nearest[5] == pytest.approx(0.0, abs=1e-6)


def test_bands_split_the_pairs_by_cosine_with_the_last_open_above():
    bands = band_disagreement(SIM, LABELS, [0.95, 0.99])
    assert [(b["from"], b["to"], b["pairs"], b["label_differs"]) for b in bands] == [
        (0.95, 0.99, 1, 1), (0.99, None, 2, 1)]


def test_sample_pairs_are_the_lowest_cosines_above_the_threshold():
    texts = ["zero", "one", "two", "three", "three", "five"]
    samples = sample_pairs(cosine_links(SIM, 0.95), SIM, texts, LABELS, 2)
    assert [(s["a"], s["b"]) for s in samples] == [("zero", "two"), ("zero", "one")]
    assert samples[0]["labels"] == ["pos", "neg"]
    assert samples[0]["cosine"] == pytest.approx(0.96, abs=1e-4)
    long = sample_pairs(cosine_links(SIM, 0.99), SIM, ["x" * 300] * 6, LABELS, 5)
    assert len(long) == 2 and len(long[0]["a"]) == 100
    # Preferring pairs of different texts puts (0,1) before the identical (3,4) whatever their cosines.
    first = sample_pairs(cosine_links(SIM, 0.99), SIM, texts, LABELS, 1, prefer_distinct_text=True)
    assert (first[0]["a"], first[0]["b"]) == ("zero", "one")


def test_knn_votes_take_the_majority_ties_to_the_nearest_and_skip_excluded():
    sim = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    pool = ["a", "b", "b", "a"]
    assert knn_votes(sim, pool, 3) == ["b", "b"]
    assert knn_votes(sim, pool, 4) == ["a", "a"]  # 2-2: the nearest tied neighbour's label
    excluded = np.array([[False, True, True, False], [False, False, False, False]])
    assert knn_votes(sim, pool, 3, excluded) == ["a", "b"]


def test_knn_effect_counts_twins_among_the_neighbours_and_the_flattery_they_give():
    # Held back: 0. Its twin 1 (label pos) is nearest; without it the nearest are 2 (neg) then the rest.
    effect = knn_effect(SIM, cosine_links(SIM, 0.99), LABELS, np.array([0]), k=1)
    assert effect == {"top1_twin": 1.0, "topk_twin": 1.0, "topk_twins": 1.0, "any_twin": 1.0, "acc_with": 1.0,
                      "acc_without": 0.0}
    # Held back: 3 and 0. 3's twin 4 is its nearest; 0's two nearest are 1 (0.995) and 2 (0.96), twins at 0.95.
    both = knn_effect(SIM, cosine_links(SIM, 0.95), LABELS, np.array([0, 3]), k=2)
    assert both["topk_twins"] == pytest.approx((2 + 1) / 2)
    none = knn_effect(SIM, cosine_links(SIM, 0.99), LABELS, np.array([5]), k=2)
    assert (none["top1_twin"], none["topk_twin"], none["any_twin"]) == (0.0, 0.0, 0.0)


def test_held_back_draws_are_seeded_and_capped_by_the_rows():
    draws = held_back_draws(10, 4, 3, seed=1)
    assert [d.tolist() for d in draws] == [d.tolist() for d in held_back_draws(10, 4, 3, seed=1)]
    assert all(len(set(d.tolist())) == 4 and (np.diff(d) > 0).all() for d in draws)
    assert len(held_back_draws(5, 110, 1, seed=0)[0]) == 4


def test_analyse_reports_every_criterion_with_samples_and_knn_figures():
    texts = ["a b", "A b!", "c", "d", "d", "e"]
    result = analyse(texts, LABELS, VECTORS, [0.99, 0.95], held_back=2, draws=3, k=1, samples=1)
    names = [c["criterion"] for c in result["criteria"]]
    assert names == ["≥0.95", "≥0.99", EXACT, NORMALISED]
    by_name = {c["criterion"]: c for c in result["criteria"]}
    assert by_name[EXACT]["pairs"] == 1 and by_name[NORMALISED]["pairs"] == 2
    assert by_name["≥0.99"]["reference_caught"] == 1.0
    assert by_name[NORMALISED]["samples"][0]["a"] == "a b"  # the pair whose texts differ comes first
    assert result["nearest_other"]["max"] == pytest.approx(1.0, abs=1e-6)
    assert set(by_name["≥0.95"]["knn"]) == {"top1_twin", "topk_twin", "topk_twins", "any_twin", "acc_with",
                                            "acc_without"}
    assert result["held_back"] == 2 and result["n"] == 6
