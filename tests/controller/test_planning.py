import numpy as np
import pytest

from controller.planning import BudgetTooSmallError, InputTooLongError, PromptBuilder, plan_batch
from controller.pool import LabeledPool
from controller.predict import plan_calibration, predict_batch
from controller.templates import PromptTemplate
from tests.fakes import FakeEmbedder, FakeScorer

TEMPLATE = PromptTemplate.parse("Input: {text}\nLabel: {label}")
TEXTS = ["great fun film", "awful boring film", "great acting", "boring plot", "fun ride", "awful mess"]
LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]


def _builder(max_model_len=512):
    embedder, scorer = FakeEmbedder(), FakeScorer(max_model_len)
    pool = LabeledPool(ids=[f"e{i}" for i in range(6)], inputs=[{"text": t} for t in TEXTS], labels=LABELS,
                       embeddings=embedder.embed(TEXTS))
    verbalizers = {"positive": "positive", "negative": "negative"}
    return PromptBuilder(TEMPLATE, verbalizers, pool, scorer.tokenize, max_model_len, 1), scorer, embedder


def test_knn_plan_puts_nearest_demo_last():
    builder, _, embedder = _builder()
    queries = [{"text": "great fun"}]
    planned = plan_batch(builder, queries, embedder.embed(["great fun"]), [2], "knn", 0, None)
    rows = planned[0].demo_rows
    sims = planned[0].similarities
    assert len(rows) == 2
    assert sims[rows[-1]] == sims.max()
    assert planned[0].text.endswith(f"Input: {TEXTS[rows[-1]]}\nLabel: {LABELS[rows[-1]]}\n\nInput: great fun\nLabel:")


def test_window_drops_least_similar_first():
    builder, scorer, embedder = _builder()
    full = plan_batch(builder, [{"text": "great fun"}], embedder.embed(["great fun"]), [4], "knn", 0, None)[0]
    limit = len(full.token_ids) - 2  # one demonstration too many
    small, _, _ = _builder(max_model_len=limit + 1)
    small.pool = builder.pool
    small.tokenize = scorer.tokenize
    fitted = plan_batch(small, [{"text": "great fun"}], embedder.embed(["great fun"]), [4], "knn", 0, None)[0]
    assert fitted.demo_rows == full.demo_rows[1:]
    assert len(fitted.token_ids) <= limit


def test_input_too_long_even_zero_shot():
    builder, _, embedder = _builder(max_model_len=8)
    with pytest.raises(InputTooLongError) as info:
        plan_batch(builder, [{"text": "a b c d e f g h i j"}], embedder.embed(["x"]), [0], "knn", 0, None)
    assert info.value.index == 0


def test_budget_trims_the_richest_prompts_and_refuses_impossible_budgets():
    builder, _, embedder = _builder()
    queries = [{"text": "great fun"}, {"text": "boring mess"}]
    embs = embedder.embed([q["text"] for q in queries])
    free = plan_batch(builder, queries, embs, [4, 4], "knn", 0, None)
    zero = plan_batch(builder, queries, embs, [0, 0], "knn", 0, None)
    zero_total = sum(len(p.token_ids) for p in zero)
    budget = (sum(len(p.token_ids) for p in free) + zero_total) // 2
    fitted = plan_batch(builder, queries, embs, [4, 4], "knn", 0, budget)
    assert sum(len(p.token_ids) for p in fitted) <= budget
    assert abs(len(fitted[0].demo_rows) - len(fitted[1].demo_rows)) <= 1
    with pytest.raises(BudgetTooSmallError):
        plan_batch(builder, queries, embs, [4, 4], "knn", 0, zero_total - 1)


async def test_predict_batch_calibrates_per_demo_set_and_counts_tokens():
    builder, scorer, embedder = _builder()
    queries = [{"text": "great positive fun"}, {"text": "awful negative"}]
    planned = plan_batch(builder, queries, embedder.embed([q["text"] for q in queries]), [2, 2], "knn", 0, None)
    calibration = plan_calibration(builder, planned, "contextual")
    assert len(calibration.prompts) == 3 * len(calibration.demo_sets)
    result = await predict_batch(builder, planned, calibration, ["positive", "negative"], scorer)
    assert [p.label for p in result.predictions] == ["positive", "negative"]
    for p in result.predictions:
        assert np.isclose(sum(p.probs.values()), 1.0)
    n_sets = len({tuple(p.demo_rows) for p in planned})
    assert len(scorer.calls) == 2 + 3 * n_sets
    assert result.usage.prompt_tokens == sum(len(p.token_ids) for p in planned)
    assert result.usage.calibration_tokens == sum(len(c) for c in scorer.calls[2:])
    # The fake model favours "positive" by 0.1 nats on content-free inputs; calibration divides that out.
    none = await predict_batch(builder, planned, plan_calibration(builder, planned, "none"),
                               ["positive", "negative"], scorer)
    assert none.predictions[0].probs == none.predictions[0].uncalibrated_probs
    assert result.predictions[0].probs["positive"] < none.predictions[0].probs["positive"]


def test_random_sets_shrink_from_the_end_so_they_stay_prefixes_of_the_shared_order():
    builder, _, embedder = _builder()
    queries = [{"text": "great fun"}, {"text": "boring mess"}, {"text": "fun ride again"}]
    embs = embedder.embed([q["text"] for q in queries])
    free = plan_batch(builder, queries, embs, [5, 5, 5], "random", 3, None)
    shared = free[0].demo_rows
    assert all(p.demo_rows == shared for p in free)
    budget = sum(len(p.token_ids) for p in free) * 2 // 3
    trimmed = plan_batch(builder, queries, embs, [5, 5, 5], "random", 3, budget)
    assert sum(len(p.token_ids) for p in trimmed) <= budget
    assert any(len(p.demo_rows) < 5 for p in trimmed)
    for p in trimmed:  # what is left is the shared order's first rows: the prefix and the bias estimate it shares
        assert p.demo_rows == shared[:len(p.demo_rows)]
    # kNN prompts still lose their least similar demonstration, the first one.
    knn = plan_batch(builder, queries, embs, [5, 5, 5], "knn", 0, None)
    knn_trimmed = plan_batch(builder, queries, embs, [5, 5, 5], "knn", 0, budget)
    for full, cut in zip(knn, knn_trimmed, strict=True):
        assert cut.demo_rows == full.demo_rows[len(full.demo_rows) - len(cut.demo_rows):]


def test_one_seed_per_query_draws_a_random_set_per_query():
    builder, _, embedder = _builder()
    queries = [{"text": f"query {i}"} for i in range(6)]
    planned = plan_batch(builder, queries, embedder.embed([q["text"] for q in queries]), [3] * 6, "random",
                         [10 + i for i in range(6)], None)
    assert len({tuple(p.demo_rows) for p in planned}) > 1
    again = plan_batch(builder, queries[2:3], embedder.embed(["query 2"]), [3], "random", [12], None)
    assert again[0].demo_rows == planned[2].demo_rows
    numpy_seed = plan_batch(builder, queries[:2], embedder.embed(["a", "b"]), [3, 3], "random", np.int64(12), None)
    assert [p.demo_rows for p in numpy_seed] == [planned[2].demo_rows] * 2
    with pytest.raises(ValueError):  # a seed per query, or one for all: not a few
        plan_batch(builder, queries, embedder.embed([q["text"] for q in queries]), [3] * 6, "random", [1, 2], None)
