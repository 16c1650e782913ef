import itertools

import numpy as np
import pytest

from controller.allocator import _upper_hull, allocate, smallest_sufficient
from controller.errors import BudgetTooSmallError


def brute_force(p, c, budget):
    best, best_choice = -1.0, None
    for choice in itertools.product(range(p.shape[1]), repeat=p.shape[0]):
        cost = sum(c[i, j] for i, j in enumerate(choice))
        value = sum(p[i, j] for i, j in enumerate(choice))
        if cost <= budget and value > best:
            best, best_choice = value, choice
    return best, best_choice


def test_hull_drops_dominated_and_concave_points():
    costs = np.array([10, 20, 30, 40])
    acc = np.array([0.5, 0.55, 0.9, 0.85])  # 20 lies under the chord 10 -> 30; 40 costs more for less
    assert _upper_hull(costs, acc) == [0, 2]


def test_hand_worked_budget():
    # Input 0 gains a lot from demonstrations, input 1 nothing: the budget goes to input 0.
    p = np.array([[0.3, 0.6, 0.9], [0.8, 0.8, 0.8]])
    c = np.array([[10, 50, 90], [10, 50, 90]])
    assert allocate(p, c, 100).tolist() == [2, 0]
    assert allocate(p, c, 60).tolist() == [1, 0]
    assert allocate(p, c, 20).tolist() == [0, 0]
    with pytest.raises(BudgetTooSmallError):
        allocate(p, c, 19)


def test_greedy_is_close_to_brute_force_on_random_concave_problems():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, k = 4, 4
        c = np.cumsum(rng.integers(5, 40, size=(n, k)), axis=1)
        gains = np.sort(rng.uniform(0, 0.3, size=(n, k)), axis=1)[:, ::-1]  # diminishing returns
        p = np.clip(rng.uniform(0.2, 0.5, size=(n, 1)) + np.cumsum(gains, axis=1) - gains[:, :1], 0, 1)
        budget = int(rng.integers(c[:, 0].sum(), c[:, -1].sum() + 1))
        choice = allocate(p, c, budget)
        assert sum(c[i, j] for i, j in enumerate(choice)) <= budget
        best, _ = brute_force(p, c, budget)
        value = sum(p[i, j] for i, j in enumerate(choice))
        assert value >= best - 0.3 - 1e-9  # within one item's largest upgrade of the optimum


def test_smallest_sufficient():
    p = np.array([[0.9, 0.9, 0.95], [0.2, 0.7, 0.7]])
    c = np.array([[10, 50, 90], [10, 50, 90]])
    assert smallest_sufficient(p, c).tolist() == [2, 1]
    assert smallest_sufficient(p, c, tolerance=0.05).tolist() == [0, 1]
