"""The confidence cascade: margins, its replay on held-back scores, its fit, and its stages in the predictor."""

import numpy as np
import pytest

from controller.calibration import NoCalibration
from controller.cascade import NEVER, Cascade, escalation_order, fit_cascade, margins, replay
from controller.counts import FixedCount, TaskDefaults
from controller.predictor import PredictOptions, Predictor
from controller.retrieval import KnnRetriever
from tests.fakes import fake_builder

LABELS = ["positive", "negative"]
TEXTS = ["great fun film", "awful boring film", "great acting", "boring plot", "fun ride", "awful mess"]
POOL_LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]


def test_margin_is_the_top_probability_less_the_runner_up():
    assert margins(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])) == pytest.approx([0.5, 0.0])


def test_a_cascade_needs_increasing_counts_and_a_threshold_per_stage_but_the_last():
    with pytest.raises(ValueError):
        Cascade((0, 4), ())
    with pytest.raises(ValueError):
        Cascade((4, 1), (0.2,))
    cascade = Cascade((0, 4), (0.3,))
    assert list(cascade.goes_on(0, np.array([[0.9, 0.1], [0.6, 0.4]]))) == [False, True]
    assert not cascade.goes_on(1, np.array([[0.5, 0.5]])).any()  # the last stage answers


def test_the_least_confident_go_on_first():
    probs = np.array([[0.6, 0.4], [0.95, 0.05], [0.51, 0.49], [0.7, 0.3]])
    assert escalation_order(probs, np.array([True, False, True, True])) == [2, 0, 3]


def _held_back(n=200, seed=0):
    """Zero-shot is right exactly where it is confident; four demonstrations are always right."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, n)
    confident = rng.random(n) < 0.6
    zero = np.where(confident[:, None], np.eye(2)[gold] * 0.8 + 0.1, np.eye(2)[1 - gold] * 0.1 + 0.45)
    four = np.eye(2)[gold] * 0.6 + 0.2
    probs = np.stack([zero, four], axis=1)
    tokens = np.tile([20, 100], (n, 1))
    return probs, gold, tokens, confident


def test_replay_adds_up_every_stage_and_answers_with_the_last():
    probs, gold, tokens, confident = _held_back()
    played = replay(Cascade((0, 4), (0.5,)), probs, tokens, [0, 4])
    assert list(played.k) == [0 if c else 4 for c in confident]
    assert list(played.tokens) == [20 if c else 120 for c in confident]
    assert (played.answers == gold).all()
    never = replay(Cascade((0, 4), (NEVER,)), probs, tokens, [0, 4])
    assert (never.tokens == 20).all() and (never.answers == gold).mean() == pytest.approx(confident.mean())


def test_the_fit_finds_the_cheap_cascade_when_confidence_tells():
    probs, gold, tokens, confident = _held_back()
    cascade, figures = fit_cascade(probs, gold, tokens, [0, 4], 2)
    assert cascade.stages == (0, 4)
    assert figures["held_back"]["accuracy"] == 1.0
    assert figures["held_back"]["mean_prompt_tokens"] == pytest.approx(20 + 100 * (~confident).mean())
    assert figures["fixed"]["4"]["accuracy"] == 1.0


def test_without_a_signal_the_fit_keeps_the_best_fixed_count():
    rng = np.random.default_rng(1)
    n = 200
    gold = rng.integers(0, 2, n)
    # Zero-shot is right half the time at random, whatever its margin says.
    zero = rng.dirichlet([1, 1], n)
    four = np.eye(2)[gold] * 0.6 + 0.2
    cascade, figures = fit_cascade(np.stack([zero, four], axis=1), gold, np.tile([20, 100], (n, 1)), [0, 4], 2)
    assert cascade == Cascade((4,), ())
    assert figures["held_back"]["accuracy"] == 1.0


def _cascade_predictor(max_prompt_tokens=None):
    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS)
    predictor = Predictor(builder, LABELS, KnnRetriever(), FixedCount(0), NoCalibration(),
                          max_prompt_tokens=max_prompt_tokens, cascade=Cascade((0, 3), (0.3,)),
                          demos_policy="cascade")
    return predictor, scorer, embedder


async def test_the_predictor_escalates_only_the_unsure_inputs_and_counts_both_stages():
    predictor, scorer, embedder = _cascade_predictor()
    # The fake model is sure where the query names a label, and unsure elsewhere.
    queries = [{"text": "positive really"}, {"text": "some plot"}, {"text": "negative indeed"}, {"text": "a ride"}]
    embeddings = embedder.embed([q["text"] for q in queries])
    plan = predictor.plan(queries, embeddings)
    assert [len(p.demo_rows) for p in plan.prompts] == [0, 0, 0, 0]
    result = await predictor.run(plan, scorer)
    stages = [p.stages for p in result.predictions]
    assert stages == [(0,), (0, 3), (0,), (0, 3)]
    assert [len(p.demo_rows) for p in result.predictions] == [0, 3, 0, 3]
    assert [p.label for p in result.predictions][::2] == ["positive", "negative"]
    # Each escalated input's tokens are its two prompts'; the usage counts every prompt scored.
    zero_shot = [len(scorer.tokenize(predictor.builder.render(q, []))) for q in queries]
    assert result.predictions[0].prompt_tokens == zero_shot[0]
    assert result.predictions[1].prompt_tokens > 2 * zero_shot[1]
    assert result.usage.prompt_tokens == sum(p.prompt_tokens for p in result.predictions)
    assert len(scorer.calls) == 6
    assert result.usage.computed_tokens == sum(p.computed_tokens for p in result.predictions)


async def test_under_a_budget_the_least_confident_go_on_while_it_lasts():
    queries = [{"text": "a plot"}, {"text": "a ride"}]
    predictor, scorer, embedder = _cascade_predictor()
    embeddings = embedder.embed([q["text"] for q in queries])
    free = await predictor.run(predictor.plan(queries, embeddings), scorer)
    assert [p.stages for p in free.predictions] == [(0, 3), (0, 3)]
    zero_shot = [len(scorer.tokenize(predictor.builder.render(q, []))) for q in queries]
    later = [p.prompt_tokens - z for p, z in zip(free.predictions, zero_shot, strict=True)]
    # Room for the zero-shot prompts and the dearer escalation alone: one input goes on, not both.
    budget = sum(zero_shot) + max(later)
    predictor, scorer, embedder = _cascade_predictor(max_prompt_tokens=budget)
    limited = await predictor.run(predictor.plan(queries, embeddings), scorer)
    assert sorted(len(p.stages) for p in limited.predictions) == [1, 2]
    assert limited.usage.prompt_tokens <= budget


def test_auto_serves_the_fitted_cascade():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    cascade = Cascade((1, 4), (0.2,))
    predictor = Predictor.from_options(builder, LABELS, PredictOptions(), TaskDefaults(3), cascade=cascade)
    assert (predictor.counts, predictor.cascade, predictor.demos_policy) == (FixedCount(1), cascade, "cascade")
    fixed = Predictor.from_options(builder, LABELS, PredictOptions(demos=2), TaskDefaults(3), cascade=cascade)
    assert (fixed.counts, fixed.cascade, fixed.demos_policy) == (FixedCount(2), None, "fixed")
    unfitted = Predictor.from_options(builder, LABELS, PredictOptions(), TaskDefaults(3))
    assert (unfitted.counts, unfitted.demos_policy) == (FixedCount(3), "default")
