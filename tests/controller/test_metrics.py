"""How good a set of answers is: macro-F1 (against scikit-learn's), ECE and log-loss by hand, and the bootstrap
intervals that compare methods on the same items."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from controller.metrics import (
    accuracy_rows,
    bootstrap,
    bootstrap_rows,
    expected_calibration_error,
    log_loss,
    macro_f1,
    macro_f1_rows,
    paired_bootstrap,
    paired_differences,
    significantly_above,
    significantly_below,
)


def _sklearn_macro_f1(gold, predicted, n_labels):
    return f1_score(gold, predicted, average="macro", labels=list(range(n_labels)), zero_division=0)


def test_macro_f1_by_hand_counts_a_label_never_seen_as_zero():
    # label 0: 2*1/(1+2) = 2/3; label 1: 2*2/(3+2) = 4/5; label 2, never predicted nor gold: 0
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3) == pytest.approx((2 / 3 + 4 / 5) / 3)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_agrees_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    gold, predicted = rng.integers(0, 4, 50), rng.integers(0, 3, 50)  # label 3 never predicted
    assert macro_f1(gold, predicted, 4) == pytest.approx(_sklearn_macro_f1(gold, predicted, 4))
    assert macro_f1(gold, predicted, 5) == pytest.approx(_sklearn_macro_f1(gold, predicted, 5))  # and one unseen


def test_macro_f1_of_probabilities_is_that_of_their_argmax():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(3), 60)
    gold = rng.integers(0, 3, 60)
    assert macro_f1(gold, probs.argmax(axis=1), 3) == pytest.approx(_sklearn_macro_f1(gold, probs.argmax(axis=1), 3))


def test_macro_f1_and_accuracy_rows_score_each_row_on_its_own():
    rng = np.random.default_rng(11)
    gold, predicted = rng.integers(0, 3, (6, 30)), rng.integers(0, 3, (6, 30))
    predicted[0] = gold[0]  # a perfect row beside imperfect ones
    predicted[1] = 0  # a row that never predicts labels 1 and 2
    rows = macro_f1_rows(gold, predicted, 3)
    assert rows.shape == (6,) and rows[0] == pytest.approx(1.0)
    for g, p, value in zip(gold, predicted, rows, strict=True):
        assert value == pytest.approx(_sklearn_macro_f1(g, p, 3))
    assert accuracy_rows(gold, predicted, 3) == pytest.approx([np.mean(predicted[i] == gold[i]) for i in range(6)])


def test_ece_by_hand():
    gold = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    # 0.9-bin: 3 answers, 2 right: 3/5 * |0.9 - 2/3|; 0.7-bin: right: 1/5 * 0.3; 0.6-bin: wrong: 1/5 * 0.6
    assert expected_calibration_error(probs, gold) == pytest.approx(3 / 5 * (0.9 - 2 / 3) + 0.3 / 5 + 0.6 / 5)
    # One bin: mean confidence 0.8 against accuracy 0.6.
    assert expected_calibration_error(probs, gold, bins=1) == pytest.approx(0.2)
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(perfect, gold) == 0.0


def test_log_loss_by_hand_and_clipped():
    probs = np.array([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]])
    assert log_loss(probs, np.array([1, 0, 1])) == pytest.approx(-(np.log(0.5) + np.log(0.8) + np.log(0.9)) / 3)
    # A gold label given probability 0 costs log(1e12), not infinity.
    assert log_loss(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(12 * np.log(10))


def test_a_method_against_itself_differs_by_exactly_nothing():
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    rows = bootstrap_rows(len(gold), 500, np.random.default_rng(1))
    same = paired_bootstrap(gold, predicted, predicted.copy(), 3, rows)
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)


def test_a_clearly_better_method_has_an_interval_above_zero():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 200)
    better = np.where(rng.random(200) < 0.9, gold, 1 - gold)  # right 90% of the time
    worse = rng.integers(0, 2, 200)  # a coin
    rows = bootstrap_rows(len(gold), 1000, np.random.default_rng(3))
    diff = paired_bootstrap(gold, better, worse, 2, rows)
    assert diff.point == pytest.approx(macro_f1(gold, better, 2) - macro_f1(gold, worse, 2))
    assert 0.0 < diff.low <= diff.point <= diff.high
    reverse = paired_bootstrap(gold, worse, better, 2, rows)
    assert reverse.high < 0.0 and reverse.point == pytest.approx(-diff.point)
    accuracy = paired_bootstrap(gold, better, worse, 2, rows, metric=accuracy_rows)
    assert accuracy.point == pytest.approx((better == gold).mean() - (worse == gold).mean()) and accuracy.low > 0.0


def test_bootstrap_interval_holds_the_point():
    rng = np.random.default_rng(4)
    gold = rng.integers(0, 3, 120)
    predicted = np.where(rng.random(120) < 0.6, gold, rng.integers(0, 3, 120))
    rows = bootstrap_rows(len(gold), 1000, np.random.default_rng(5))
    assert rows.shape == (1000, 120) and rows.min() >= 0 and rows.max() < 120
    interval = bootstrap(gold, predicted, 3, rows)
    assert interval.point == pytest.approx(_sklearn_macro_f1(gold, predicted, 3))
    assert interval.low < interval.point < interval.high
    assert interval.as_dict() == {"point": interval.point, "low": interval.low, "high": interval.high}


def test_one_sided_tests_point_the_right_way():
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 300)
    good = np.where(rng.random(300) < 0.9, gold, 1 - gold)
    poor = np.where(rng.random(300) < 0.6, gold, 1 - gold)
    rows = bootstrap_rows(300, 1000, rng)
    differences = paired_differences(gold, good, poor, 2, rows)
    assert significantly_above(differences) and not significantly_below(differences)
    assert significantly_below(-differences) and not significantly_above(-differences)
    same = paired_differences(gold, good, good.copy(), 2, rows)
    assert not significantly_above(same) and not significantly_below(same)
