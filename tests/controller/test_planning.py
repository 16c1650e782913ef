"""Prompts that fit: the window, the budget, and the per-demonstration token estimate that prices counts."""

import numpy as np
import pytest

from controller.errors import BudgetTooSmallError, EmptyPromptError, InputTooLongError
from controller.planning import PromptBuilder, build_prompts
from controller.pool import LabeledPool
from controller.retrieval import KnnRetriever, RandomRetriever, pool_similarities
from controller.templates import PromptTemplate
from tests.conftest import load_split
from tests.fakes import FakeEmbedder, fake_builder

TEXTS = ["great fun film", "awful boring film", "great acting", "boring plot", "fun ride", "awful mess"]
LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]
KNN = KnnRetriever()


def _prompts(builder, embedder, queries, k, retriever=KNN, budget=None, seed=0):
    vectors = embedder.embed([q["text"] for q in queries])
    sims = pool_similarities(vectors, builder.pool.embeddings, len(queries))
    rows = retriever.select_all(sims, builder.pool.embeddings, [k] * len(queries), [seed] * len(queries))
    return build_prompts(builder, queries, rows, retriever.trim, budget)


def test_prompt_renders_demonstrations_in_order_before_the_query():
    builder, _, embedder = fake_builder(TEXTS, LABELS)
    prompt = _prompts(builder, embedder, [{"text": "great fun"}], 2)[0]
    assert len(prompt.demo_rows) == 2
    last = prompt.demo_rows[-1]
    assert prompt.text.endswith(f"Input: {TEXTS[last]}\nLabel: {LABELS[last]}\n\nInput: great fun\nLabel:")
    assert prompt.token_ids == builder.tokenize(prompt.text)


def test_window_drops_demonstrations_as_the_retriever_trims():
    builder, scorer, embedder = fake_builder(TEXTS, LABELS)
    full = _prompts(builder, embedder, [{"text": "great fun"}], 4)[0]
    limit = len(full.token_ids) - 2  # one demonstration too many
    small, _, _ = fake_builder(TEXTS, LABELS, max_model_len=limit + 1)
    small.tokenize = scorer.tokenize
    fitted = _prompts(small, embedder, [{"text": "great fun"}], 4)[0]
    assert fitted.demo_rows == full.demo_rows[1:]  # kNN: the least similar goes
    assert len(fitted.token_ids) <= limit


def test_input_too_long_even_zero_shot():
    builder, _, embedder = fake_builder(TEXTS, LABELS, max_model_len=8)
    with pytest.raises(InputTooLongError) as info:
        _prompts(builder, embedder, [{"text": "a b c d e f g h i j"}], 0)
    assert info.value.index == 0


def test_budget_trims_the_richest_prompts_and_refuses_impossible_budgets():
    builder, _, embedder = fake_builder(TEXTS, LABELS)
    queries = [{"text": "great fun"}, {"text": "boring mess"}]
    free = _prompts(builder, embedder, queries, 4)
    zero_total = sum(len(p.token_ids) for p in _prompts(builder, embedder, queries, 0))
    budget = (sum(len(p.token_ids) for p in free) + zero_total) // 2
    fitted = _prompts(builder, embedder, queries, 4, budget=budget)
    assert sum(len(p.token_ids) for p in fitted) <= budget
    assert abs(len(fitted[0].demo_rows) - len(fitted[1].demo_rows)) <= 1
    with pytest.raises(BudgetTooSmallError):
        _prompts(builder, embedder, queries, 4, budget=zero_total - 1)


def test_budget_trims_random_sets_from_the_end_and_retrieved_ones_from_the_front():
    builder, _, embedder = fake_builder(TEXTS, LABELS)
    queries = [{"text": "great fun"}, {"text": "boring mess"}, {"text": "fun ride again"}]
    random = RandomRetriever()
    free = _prompts(builder, embedder, queries, 5, random, seed=3)
    shared = free[0].demo_rows
    assert all(p.demo_rows == shared for p in free)
    budget = sum(len(p.token_ids) for p in free) * 2 // 3
    trimmed = _prompts(builder, embedder, queries, 5, random, budget=budget, seed=3)
    assert sum(len(p.token_ids) for p in trimmed) <= budget
    assert any(len(p.demo_rows) < 5 for p in trimmed)
    for p in trimmed:  # what is left is the shared order's first rows: the prefix and the bias estimate it shares
        assert p.demo_rows == shared[:len(p.demo_rows)]
    knn = _prompts(builder, embedder, queries, 5)
    knn_trimmed = _prompts(builder, embedder, queries, 5, budget=budget)
    for full, cut in zip(knn, knn_trimmed, strict=True):
        assert cut.demo_rows == full.demo_rows[len(full.demo_rows) - len(cut.demo_rows):]


def test_estimate_matches_exact_token_counts():
    """The per-demonstration token estimate that prices candidate counts, against exact tokenization with the
    default model's real tokenizer."""
    from transformers import AutoTokenizer

    from service.config import Settings
    from service.model_files import resolve_model

    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(settings.model, settings.model_cache)))
    rows = load_split("sst2", "train", limit=40)
    pool = LabeledPool(ids=[str(i) for i in range(32)], inputs=[{"text": r["text"]} for r in rows[:32]],
                       labels=[r["label"] for r in rows[:32]], embeddings=FakeEmbedder().embed(["x"] * 32))
    for instruction in (None, "Classify the sentiment."):
        template = PromptTemplate.parse("Review: {text}\nSentiment: {label}", instruction=instruction)
        builder = PromptBuilder(template, {"negative": "negative", "positive": "positive"}, pool,
                                lambda text: tokenizer(text)["input_ids"], 8192, 1)
        errors = []
        for i, row in enumerate(rows[32:]):
            demo_rows = list(range(i, i + 8))
            exact = len(builder.tokenize(builder.render({"text": row["text"]}, demo_rows)))
            estimate = builder.zero_shot_tokens({"text": row["text"]}) + builder.demo_tokens(demo_rows)
            errors.append(estimate - exact)
        assert np.abs(errors).max() <= 1, errors


@pytest.mark.parametrize("template", ["{text}{label}", "{text} {label}"])
def test_an_empty_input_without_demonstrations_is_an_empty_prompt_error_naming_it(template):
    builder, _, embedder = fake_builder(TEXTS, LABELS, template=template)
    with pytest.raises(EmptyPromptError) as info:
        _prompts(builder, embedder, [{"text": "great"}, {"text": ""}], 0)
    assert info.value.index == 1 and str(info.value).startswith("inputs[1] makes an empty prompt")
    assert builder.renders_empty({"text": ""}) and not builder.renders_empty({"text": "great"})
    with_demos = _prompts(builder, embedder, [{"text": ""}], 1)[0]
    assert with_demos.demo_rows and with_demos.token_ids
    # Text around the input, or an instruction, makes a prompt of an empty input.
    plain, _, embedder = fake_builder(TEXTS, LABELS)
    assert _prompts(plain, embedder, [{"text": ""}], 0)[0].token_ids


def test_a_budget_keeps_the_last_demonstration_of_an_empty_input():
    builder, _, embedder = fake_builder(TEXTS, LABELS, template="{text}{label}")
    queries = [{"text": ""}, {"text": "great fun film again"}]
    free = _prompts(builder, embedder, queries, 2)
    lean = sum(len(p.token_ids) for p in _prompts(builder, embedder, queries[1:], 0))
    one_demo = len(_prompts(builder, embedder, queries[:1], 1)[0].token_ids)
    fitted = _prompts(builder, embedder, queries, 2, budget=one_demo + lean)
    assert [len(p.demo_rows) for p in fitted] == [1, 0] and all(p.token_ids for p in fitted)
    assert sum(len(p.token_ids) for p in fitted) <= one_demo + lean < sum(len(p.token_ids) for p in free)
    with pytest.raises(BudgetTooSmallError):
        _prompts(builder, embedder, queries, 2, budget=one_demo + lean - 1)
