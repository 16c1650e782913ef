import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from controller.features import query_features
from controller.meta import MetaController


def synthetic(n=400, seed=0):
    """Easy inputs (x0 > 0) are right at every count; hard ones only with 4 or more demonstrations."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    easy = X[:, 0] > 0
    Y = np.stack([easy, easy, easy | (rng.random(n) < 0.1), np.ones(n, bool), np.ones(n, bool)], axis=1)
    return X, Y.astype(int), easy


def test_estimator_conventions():
    est = MetaController(candidate_k=(0, 1), C=0.5, embedding_dims=None)
    assert clone(est).get_params() == {"candidate_k": (0, 1), "C": 0.5, "tolerance": 0.02, "embedding_dims": None}
    with pytest.raises(NotFittedError):
        est.predict_proba(np.zeros((1, 3)))
    X, Y, _ = synthetic()
    assert est.fit(X, Y[:, :2]) is est and est.n_features_in_ == 3
    with pytest.raises(ValueError, match="columns"):
        MetaController(embedding_dims=None).fit(X, Y[:, :2])


def test_learns_which_inputs_need_demonstrations():
    X, Y, easy = synthetic()
    controller = MetaController(tolerance=0.05, embedding_dims=None).fit(X, Y)
    Xt, _, easy_t = synthetic(400, seed=1)
    clear = np.abs(Xt[:, 0]) > 1  # away from the boundary, where the evidence is unambiguous
    k = controller.predict(Xt)
    assert (k[easy_t & clear] <= 1).mean() > 0.9
    assert (k[~easy_t & clear] >= 4).mean() > 0.9
    p = controller.predict_proba(Xt)
    assert p.shape == (400, 5) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p[:, 3:], 1.0)  # constant columns


def test_budget_goes_to_hard_inputs():
    X, Y, _ = synthetic()
    controller = MetaController(embedding_dims=None).fit(X, Y)
    Xt, _, easy_t = synthetic(20, seed=2)
    costs = np.tile(np.array([30, 60, 90, 150, 270]), (20, 1))
    budget = 30 * 20 + 120 * int((~easy_t).sum())
    k = controller.predict(Xt, costs=costs, budget=budget)
    assert sum(costs[i, list(controller.candidate_k_).index(kk)] for i, kk in enumerate(k)) <= budget
    assert (k[~easy_t] == 4).all() and (k[easy_t] == 0).all()


def test_query_features_hand_worked():
    emb = np.array([[1.0, 0.0]])
    sims = np.array([[0.9, 0.8, 0.1]])
    f = query_features(emb, sims, [0, 1, 1], 2, [9])
    assert f.shape == (1, 2 + 6)
    assert np.isclose(f[0, 2], np.log(10))
    assert np.isclose(f[0, 3], 0.9)
    assert np.isclose(f[0, 6], (0.8 + 0.1) / 1.8)  # label 1 holds the weighted majority


def test_without_budget_the_reference_is_the_count_best_on_training_data():
    # Count 1 is the most accurate on the training examples (count 2 is right a little less often). An input
    # gets the cheapest count expected within the tolerance of count 1's, even where count 2 looks better for
    # it alone: comparing with each input's own best would chase the largest of noisy estimates.
    X, _, _ = synthetic()
    n = len(X)
    Y = np.stack([np.zeros(n, int), np.ones(n, int), (np.arange(n) % 10 > 0).astype(int)], axis=1)
    controller = MetaController(candidate_k=(0, 1, 2), embedding_dims=None, tolerance=0.02).fit(X, Y)
    costs = np.array([[10, 20, 40]] * 3)
    expected = np.array([[0.3, 0.80, 0.95],   # count 2 looks best, count 1 is the reference: 1
                         [0.79, 0.80, 0.9],   # count 0 within 0.02 of the reference: 0
                         [0.5, 0.60, 0.9]])   # the reference itself: 1
    assert list(controller.choose(expected, costs)) == [1, 0, 1]
    from controller.allocator import smallest_sufficient

    assert list(smallest_sufficient(expected, costs, 0.02)) == [2, 2, 2]  # each input's own best instead


def test_embedding_is_reduced_to_principal_components_before_the_regressions():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    X = query_features(emb, sims, list(rng.integers(0, 2, 200)), 2, list(rng.integers(5, 30, 200)))
    Y = np.stack([emb[:, 0] > 0, np.ones(200, bool)], axis=1).astype(int)
    Y[0, 1] = 0
    controller = MetaController(candidate_k=(0, 4), embedding_dims=4).fit(X, Y)
    assert controller.pca_.n_components_ == 4
    assert controller.models_[0].n_features_in_ == 4 + 6
    assert controller.predict_proba(X).shape == (200, 2)
    only_scalars = MetaController(candidate_k=(0, 4), embedding_dims=0).fit(X, Y)
    assert only_scalars.pca_ is None and only_scalars.models_[0].n_features_in_ == 6
