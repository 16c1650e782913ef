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
    est = MetaController(candidate_k=(0, 1), C=0.5)
    assert clone(est).get_params() == {"candidate_k": (0, 1), "C": 0.5, "tolerance": 0.0}
    with pytest.raises(NotFittedError):
        est.predict_proba(np.zeros((1, 3)))
    X, Y, _ = synthetic()
    assert est.fit(X, Y[:, :2]) is est and est.n_features_in_ == 3
    with pytest.raises(ValueError, match="columns"):
        MetaController().fit(X, Y[:, :2])


def test_learns_which_inputs_need_demonstrations():
    X, Y, easy = synthetic()
    controller = MetaController(tolerance=0.05).fit(X, Y)
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
    controller = MetaController().fit(X, Y)
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
