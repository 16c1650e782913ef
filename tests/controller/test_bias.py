"""The label-bias arithmetic: estimating a bias, dividing it out, pooling estimates, and their cache."""

import numpy as np

from controller.bias import BiasCache, apply_bias, estimate_bias, pool_biases


def test_estimate_bias_is_the_mean_distribution_renormalised():
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    assert np.allclose(estimate_bias(probs), [0.4, 0.25, 0.35])
    # Rows that do not sum to one (scores of a subset of labels) still give a distribution.
    assert np.allclose(estimate_bias(np.array([[2.0, 2.0], [1.0, 3.0]])), [3 / 8, 5 / 8])


def test_apply_bias_removes_a_constant_bias():
    bias = np.array([0.8, 0.2])
    # A model that says "label 0" four times too often: calibrating restores the balanced prior.
    assert np.allclose(apply_bias(bias, estimate_bias(np.stack([bias, bias]))), [0.5, 0.5])
    probs = apply_bias(np.array([[0.8, 0.2], [0.6, 0.4]]), bias)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs[1].argmax() == 1  # 0.6/0.8 < 0.4/0.2


def test_pool_biases_shrinks_toward_the_log_mean_and_fills_missing_sets():
    own = {"a": np.array([0.8, 0.2]), "b": np.array([0.2, 0.8])}
    assert np.allclose(pool_biases(own, ["a", "b"], 0.0)["a"], [0.8, 0.2])
    full = pool_biases(own, ["a", "b", "c"], 1.0)
    for key in "abc":  # the geometric mean of 0.8/0.2 and 0.2/0.8 is uniform
        assert np.allclose(full[key], [0.5, 0.5])
    half = pool_biases(own, ["a"], 0.5)["a"]  # sqrt(0.8)/sqrt(0.2) = 2: 2/3 against 1/3
    assert np.allclose(half, [2 / 3, 1 / 3])
    assert pool_biases({}, ["a"], 0.5) == {}


def test_bias_cache_drops_the_least_recently_used():
    cache = BiasCache(max_entries=2)
    cache.put("a", np.ones(2))
    cache.put("b", np.ones(2))
    assert cache.get("a") is not None
    cache.put("c", np.ones(2))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


def test_bias_cache_keeps_what_was_read_last():
    cache = BiasCache(max_entries=1)
    cache.put("a", np.array([0.7, 0.3]))
    cache.put("a", np.array([0.6, 0.4]))  # a new estimate under the same key replaces the old
    assert len(cache) == 1 and np.allclose(cache.get("a"), [0.6, 0.4])
    assert cache.get("missing") is None
