"""Spend a token budget across a batch: choose each input's demonstration count (DynaICL's allocator).

Inputs: for every input i and candidate count j, the expected accuracy ``p[i, j]`` (the meta-controller's)
and the real prompt tokens ``cost[i, j]``. Maximising the sum of expected accuracy under a total token budget
is a multiple-choice knapsack; the greedy below walks each input's upper convex hull of (cost, accuracy) and
always buys the upgrade with the most accuracy per token, which is optimal for the LP relaxation and within
one upgrade of the integer optimum.
"""

from __future__ import annotations

import heapq

import numpy as np

from controller.errors import BudgetTooSmallError


def _upper_hull(costs: np.ndarray, accuracy: np.ndarray) -> list[int]:
    """Candidate indices on the upper-left convex hull of (cost, accuracy), by increasing cost.

    A candidate that costs more but is not more accurate, or that lies under the chord of its neighbours,
    is never worth buying."""
    order = sorted(range(len(costs)), key=lambda j: (costs[j], -accuracy[j]))
    hull: list[int] = []
    for j in order:
        if hull and accuracy[j] <= accuracy[hull[-1]]:
            continue  # dearer and no better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies strictly under the chord a -> j: drop it. Points on the chord stay: they are smaller
            # steps that may fit a budget the larger one does not. (Slopes compared by cross-multiplication.)
            rise_b, rise_j = accuracy[b] - accuracy[a], accuracy[j] - accuracy[a]
            if rise_b * (costs[j] - costs[a]) < rise_j * (costs[b] - costs[a]) - 1e-9:
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def allocate(expected_accuracy: np.ndarray, costs: np.ndarray, budget: int) -> np.ndarray:
    """Index of the chosen candidate for each input, total cost within ``budget``."""
    p = np.asarray(expected_accuracy, dtype=np.float64)
    c = np.asarray(costs, dtype=np.int64)
    n = p.shape[0]
    hulls = [_upper_hull(c[i], p[i]) for i in range(n)]
    position = [0] * n
    spent = int(sum(c[i, hulls[i][0]] for i in range(n)))
    if spent > budget:
        raise BudgetTooSmallError(spent, budget)

    def upgrade(i: int) -> tuple[float, int, int] | None:
        if position[i] + 1 >= len(hulls[i]):
            return None
        a, b = hulls[i][position[i]], hulls[i][position[i] + 1]
        extra = int(c[i, b] - c[i, a])
        gain = float(p[i, b] - p[i, a])
        return (-gain / max(extra, 1), i, extra)

    heap = [item for i in range(n) if (item := upgrade(i)) is not None]
    heapq.heapify(heap)
    while heap:
        _, i, extra = heapq.heappop(heap)
        if spent + extra > budget:
            continue  # this input's next step does not fit; cheaper steps of others still may
        spent += extra
        position[i] += 1
        if (item := upgrade(i)) is not None:
            heapq.heappush(heap, item)
    return np.array([hulls[i][position[i]] for i in range(n)], dtype=np.int64)


def smallest_sufficient(expected_accuracy: np.ndarray, costs: np.ndarray, tolerance: float = 0.0,
                        reference: int | None = None) -> np.ndarray:
    """Without a budget: for each input, the cheapest candidate expected to be as accurate (within
    ``tolerance``) as candidate ``reference``, or as its own best candidate when no reference is given."""
    p = np.asarray(expected_accuracy, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    target = p.max(axis=1, keepdims=True) if reference is None else p[:, reference:reference + 1]
    good = p >= target - tolerance
    return np.where(good, c, np.inf).argmin(axis=1)
