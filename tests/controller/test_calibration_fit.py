"""A task's fitted calibration: the figures it is chosen by, the temperature, and the choice per count."""

import numpy as np

from controller.calibration_fit import (
    CountCalibration,
    TaskCalibration,
    fit_count,
    fit_task_calibration,
    fit_temperature,
    with_temperature,
)
from controller.metrics import expected_calibration_error


def _biased(n=400, bias=(0.85, 0.15), seed=0):
    """Two balanced labels the model sees clearly, through a strong bias toward the first label."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, n)
    clean = np.where(gold[:, None] == 0, [0.7, 0.3], [0.3, 0.7]) + rng.normal(0, 0.08, (n, 2))
    clean = np.clip(clean, 0.05, None)
    skewed = clean * np.asarray(bias)
    return skewed / skewed.sum(axis=1, keepdims=True), gold


def test_temperature_softens_overconfidence_and_keeps_the_argmax():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 2000)
    truth = np.where(gold[:, None] == 0, [0.7, 0.3], [0.3, 0.7])  # right 70% of the time if honest...
    flip = rng.random(2000) < 0.3
    honest = np.where(flip[:, None], truth[:, ::-1], truth)
    sharp = with_temperature(honest, 0.25)  # ...but sharpened to 97% confidence
    temperature = fit_temperature(sharp, gold)
    assert 3.0 < temperature < 5.0  # undoes the sharpening (4)
    assert (with_temperature(sharp, temperature).argmax(1) == sharp.argmax(1)).all()
    assert expected_calibration_error(with_temperature(sharp, temperature), gold) < 0.05


def test_a_biased_model_gets_a_correction_that_recovers_the_minority_label():
    probs, gold = _biased()
    assert (probs.argmax(1) == 0).mean() > 0.9  # uncalibrated, nearly everything is the first label
    chosen = fit_count(probs, gold, 2, seed=0)
    assert chosen.method in ("batch", "affine")
    figures = chosen.figures
    assert figures[chosen.method]["macro_f1"] > figures["none"]["macro_f1"] + 0.3
    assert set(figures) == {"none", "batch", "affine"}  # no domain figures without domain distributions
    served = chosen.apply(probs)
    assert ((served.argmax(1) == gold).mean()) > 0.85
    assert chosen.tempered["ece_with_temperature"] < 0.1
    assert chosen.held_back_mean is not None and chosen.held_back_mean[0] > 0.7


def test_an_unbiased_model_keeps_none_and_prompt_methods_are_compared_when_given():
    probs, gold = _biased(bias=(0.5, 0.5))
    chosen = fit_count(probs, gold, 2, seed=0)
    assert chosen.figures["none"]["macro_f1"] >= max(f["macro_f1"] for f in chosen.figures.values()) - 1e-9
    assert chosen.method == "none" or chosen.figures[chosen.method]["macro_f1"] > chosen.figures["none"]["macro_f1"]
    skewed, _ = _biased(bias=(0.9, 0.1))
    # Domain undid the skew perfectly; contextual left it as it was.
    prompted = fit_count(skewed, gold, 2, seed=0, prompted={"domain": probs, "contextual": skewed})
    assert {"domain", "contextual"} <= set(prompted.figures)
    assert prompted.figures["domain"]["macro_f1"] > prompted.figures["contextual"]["macro_f1"]
    assert prompted.method in ("domain", "batch", "affine")
    assert prompted.needs_prompts() == (prompted.method == "domain")


def test_three_labels_and_a_label_missing_from_the_held_back_examples():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 300)  # label 2 never held back
    probs = rng.dirichlet([2, 2, 2], 300)
    probs[np.arange(300), gold] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = fit_count(probs, gold, 3, seed=0)
    out = chosen.apply(probs)
    assert np.allclose(out.sum(axis=1), 1.0) and out.shape == (300, 3)


def test_each_count_gets_its_own_and_other_counts_the_nearest():
    probs, gold = _biased()
    fair, _ = _biased(bias=(0.5, 0.5))
    fit = fit_task_calibration("knn", [0, 4], np.stack([probs, fair], axis=1), gold, 2, seed=0)
    assert fit.counts[0].method != "none"
    assert fit.for_count(1) is fit.counts[0] and fit.for_count(3) is fit.counts[4] and fit.for_count(9) is fit.counts[4]
    described = fit.describe()
    assert described["selection"] == "knn" and set(described["counts"]) == {"0", "4"}
    assert {"method", "temperature", "validation", "ece_with_temperature"} <= set(described["counts"]["0"])
    assert TaskCalibration("knn", {2: CountCalibration("none")}).for_count(0).method == "none"
