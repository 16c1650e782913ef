"""Meta-controller training data: what the held-back queries are classified with."""

import numpy as np

from controller.calibration import ContextualCalibrator, DomainCalibrator
from controller.domain import DEFAULT_DOMAIN, DomainWords
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.predictor import Predictor
from controller.retrieval import RandomRetriever
from controller.templates import PromptTemplate
from controller.training import (
    DEAR_SHARE,
    MIN_TRAIN_SIZE,
    SERVED_SEED,
    collect,
    prompt_costs,
    scored_per_count,
    split_for_fit,
)
from tests.fakes import FakeEmbedder, FakeScorer

TEMPLATE = PromptTemplate.parse("Input: {text}\nLabel: {label}")
LABELS = ["positive", "negative"]
TEXTS = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fun", "boring"] * 5)]


def _setup(n_queries: int):
    """A builder over the pool of TEXTS, its scorer, and n held-back queries with embeddings and labels."""
    embedder, scorer = FakeEmbedder(), FakeScorer()
    pool = LabeledPool(ids=[f"e{i}" for i in range(len(TEXTS))], inputs=[{"text": t} for t in TEXTS],
                       labels=[LABELS[i % 2] for i in range(len(TEXTS))], embeddings=embedder.embed(TEXTS))
    builder = PromptBuilder(TEMPLATE, {label: label for label in LABELS}, pool, scorer.tokenize, 512, 1)
    queries = [{"text": f"held {i}"} for i in range(n_queries)]
    return builder, scorer, queries, embedder.embed([q["text"] for q in queries]), [
        LABELS[i % 2] for i in range(n_queries)]


async def test_random_selection_is_fitted_under_the_one_set_it_serves():
    builder, scorer, queries, vectors, gold = _setup(8)

    async def demo_sets(selection: str) -> set[tuple[int, ...]]:
        scorer.calls.clear()
        await collect(builder, queries, vectors, gold, LABELS, [3], selection, 0, scorer)
        # Each held-back query's prompt less its query line (calibration prompts left out).
        return {tuple(ids[:-4]) for ids in scorer.calls if "held" in scorer.decode(ids[-4:])}

    # Served random selection is one set of the whole pool: every held-back query is scored under it.
    assert len(await demo_sets("random")) == 1
    assert len(await demo_sets("knn")) > 1


def test_a_fit_of_a_shared_set_holds_back_only_examples_outside_the_sets_it_serves():
    split = split_for_fit(50, "random", [0, 2, 4], 30, seed=1)
    assert split.pool == list(range(50)) and set(split.served) == {0, 2, 4}
    assert split.served[4] == RandomRetriever().shared_set(50, 4, SERVED_SEED)
    assert split.served[2] == split.served[4][:2] and split.served[0] == []
    assert len(split.held) == 30 and not set(split.held) & set(split.served[4])
    knn = split_for_fit(50, "knn", [0, 2, 4], 30, seed=1)
    assert knn.served == {} and sorted(knn.held + knn.pool) == list(range(50)) and len(knn.held) == 30


async def test_prompt_methods_are_fitted_only_where_a_shared_set_makes_them_cheap():
    builder, scorer, queries, vectors, gold = _setup(6)
    words = DomainWords.from_inputs(builder.pool.inputs, ["text"])

    knn = await collect(builder, queries, vectors, gold, LABELS, [0, 2], "knn", 0, scorer, words=words)
    assert knn.prompted == {} and knn.engine_tokens["calibration_tokens"] == 0

    data = await collect(builder, queries, vectors, gold, LABELS, [0, 2], "random", 0, scorer, words=words)
    assert set(data.prompted) == {"contextual", "domain"}
    assert data.engine_tokens["calibration_tokens"] > 0
    # Each method's distributions are what it gives the same prompts on its own.
    predictor = Predictor.uncalibrated(builder, LABELS, "random", 2, 0)
    seeds = [0 * len(queries) + i for i in range(len(queries))]
    for method, calibrator in (("contextual", ContextualCalibrator()),
                               ("domain", DomainCalibrator(DEFAULT_DOMAIN, words))):
        alone = predictor.with_calibrator(calibrator)
        result = await alone.run(alone.plan(queries, vectors, seeds), scorer)
        expected = [[p.probs[label] for label in LABELS] for p in result.predictions]
        assert np.allclose(data.prompted[method][:, 1], expected)
        assert not np.allclose(data.prompted[method][:, 1], data.distributions[:, 1])


def test_examples_that_cannot_be_scored_at_every_count_are_never_held_back():
    for selection in ("knn", "random"):
        plain = split_for_fit(50, selection, [0, 2, 4], 30, seed=1)
        assert split_for_fit(50, selection, [0, 2, 4], 30, seed=1, never_held=()) == plain
        never = plain.held[:5]
        split = split_for_fit(50, selection, [0, 2, 4], 30, seed=1, never_held=never)
        assert len(split.held) == 30 and not set(split.held) & set(never)
        assert set(never) <= set(split.pool), selection  # they may still be demonstrations
        assert sorted(split.held + [i for i in split.pool if i not in split.held]) == list(range(50))


def test_cheap_counts_get_the_examples_the_dear_ones_leave_at_no_more_cost():
    counts, costs = [0, 1, 2, 4, 16], [30.0, 60.0, 90.0, 150.0, 510.0]
    scored = scored_per_count(costs, counts, default_k=4, train_size=110, available=250)
    assert scored[-1] == int(110 * DEAR_SHARE) and len(set(scored[:4])) == 1 and scored[0] > 110
    spent = sum(n * c for n, c in zip(scored, costs, strict=True))
    assert spent <= 110 * sum(costs) and spent > 110 * sum(costs) - sum(costs[:4])  # the budget, spent
    # Fewer examples to hold back: what the cheap counts cannot use goes back to the dear ones.
    capped = scored_per_count(costs, counts, default_k=4, train_size=110, available=120)
    assert capped[0] == 120 and int(110 * DEAR_SHARE) < capped[-1] <= 120
    assert sum(n * c for n, c in zip(capped, costs, strict=True)) <= 110 * sum(costs)
    # No count above the default (or none at or below it): every count on the same examples, as before.
    assert scored_per_count(costs, counts, default_k=16, train_size=110, available=250) == [110] * 5
    assert scored_per_count(costs[1:], counts[1:], default_k=0, train_size=110, available=250) == [110] * 4
    assert scored_per_count(costs, counts, default_k=4, train_size=30, available=30)[-1] >= MIN_TRAIN_SIZE


def test_prompt_costs_grow_by_a_demonstration_per_count():
    scorer = FakeScorer()
    costs = prompt_costs(TEMPLATE, {label: label for label in LABELS}, scorer.tokenize,
                         [{"text": t} for t in TEXTS], [LABELS[i % 2] for i in range(len(TEXTS))], [0, 1, 4])
    zero = np.mean([len(scorer.tokenize(TEMPLATE.build_prompt([], {"text": t}))) for t in TEXTS])
    assert costs[0] == zero and costs[1] > costs[0]
    assert np.isclose(costs[2] - costs[0], 4 * (costs[1] - costs[0]))


async def test_a_count_scored_on_fewer_examples_is_scored_on_the_leading_ones():
    builder, scorer, queries, vectors, gold = _setup(10)
    data = await collect(builder, queries, vectors, gold, LABELS, [0, 2], "knn", 0, scorer, scored=[10, 4])
    assert data.scored == (10, 4) and data.n_scored(0) == 10 and data.n_scored(1) == 4
    assert (data.prompt_tokens[:, 0] > 0).all() and (data.prompt_tokens[:4, 1] > 0).all()
    assert (data.prompt_tokens[4:, 1] == 0).all() and np.allclose(data.distributions[4:, 1], 0.5)
    every = await collect(builder, queries, vectors, gold, LABELS, [0, 2], "knn", 0, scorer)
    assert data.engine_tokens["prompt_tokens"] == every.prompt_tokens[:, 0].sum() + every.prompt_tokens[:4, 1].sum()
    assert np.allclose(data.distributions[:4], every.distributions[:4])
    complete = data.complete()
    assert len(complete.gold) == 4 and complete.scored == () and np.array_equal(complete.gold, every.gold[:4])
    assert every.complete() is every
