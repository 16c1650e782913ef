"""Meta-controller training data: what the held-back queries are classified with."""

import numpy as np

from controller.calibration import ContextualCalibrator, DomainCalibrator
from controller.domain import DEFAULT_DOMAIN, DomainWords
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.predictor import Predictor
from controller.retrieval import RandomRetriever
from controller.templates import PromptTemplate
from controller.training import SERVED_SEED, collect, split_for_fit
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
