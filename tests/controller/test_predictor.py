"""The predict pipeline on the fake scorer: options -> retriever, count policy, calibrator; plan -> score ->
calibrate; chunked predictions for jobs."""

import numpy as np

from controller.calibration import (
    DEFAULT_DOMAIN,
    BiasCache,
    ContextualCalibrator,
    DomainCalibrator,
    DomainWords,
    NoCalibration,
)
from controller.counts import ControllerCount, FixedCount
from controller.meta import MetaController
from controller.predictor import PredictOptions, Predictor
from controller.retrieval import KnnRetriever, RandomRetriever
from tests.fakes import fake_builder

LABELS = ["positive", "negative"]
TEXTS = ["great fun film", "awful boring film", "great acting", "boring plot", "fun ride", "awful mess"]
POOL_LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]
WORDS = DomainWords.from_inputs([{"text": t} for t in TEXTS], ["text"])


def _queries(*texts):
    return [{"text": t} for t in texts]


def test_options_choose_the_parts():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    options = PredictOptions(demos="auto", selection="random", calibration="domain", seed=7, max_prompt_tokens=90)
    predictor = Predictor.from_options(builder, LABELS, options, default_k=3, words=lambda: WORDS)
    assert isinstance(predictor.retriever, RandomRetriever) and predictor.counts == FixedCount(3)
    assert isinstance(predictor.calibrator, DomainCalibrator) and predictor.calibrator.settings == DEFAULT_DOMAIN
    assert (predictor.seed, predictor.max_prompt_tokens) == (7, 90)
    controller = MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        np.random.default_rng(0).normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1)))
    auto = Predictor.from_options(builder, LABELS, PredictOptions(calibration="none"), 3, controller)
    assert isinstance(auto.counts, ControllerCount) and isinstance(auto.calibrator, NoCalibration)


def test_embeddings_are_needed_only_where_something_reads_them():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    empty, _, _ = fake_builder([], [])

    def needs(selection, demos, pool=builder, controller=None):
        options = PredictOptions(demos=demos, selection=selection)
        return Predictor.from_options(pool, LABELS, options, 4, controller).needs_embeddings

    controller = MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        np.random.default_rng(0).normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1)))
    assert needs("knn", 2) and needs("diverse", "auto") and not needs("knn", 0)
    assert not needs("random", 4)  # one shared set: nothing retrieved per input
    assert needs("random", "auto", controller=controller)  # the controller's features
    assert not needs("knn", 4, pool=empty)


async def test_plan_score_calibrate_per_demonstration_set_and_count_tokens():
    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS)
    queries = _queries("great positive fun", "awful negative")
    predictor = Predictor(builder, LABELS, KnnRetriever(), FixedCount(2), ContextualCalibrator())
    plan = predictor.plan(queries, embedder.embed([q["text"] for q in queries]))
    n_sets = len({tuple(p.demo_rows) for p in plan.prompts})
    assert plan.n_prompts == 2 + 3 * n_sets
    result = await predictor.run(plan, scorer)
    assert [p.label for p in result.predictions] == ["positive", "negative"]
    for p in result.predictions:
        assert np.isclose(sum(p.probs.values()), 1.0)
    assert len(scorer.calls) == plan.n_prompts
    assert scorer.calls[:2] == [p.token_ids for p in plan.prompts]  # inputs first: they warm the prefix cache
    assert result.usage.prompt_tokens == sum(len(p.token_ids) for p in plan.prompts)
    assert result.usage.calibration_tokens == sum(len(c) for c in scorer.calls[2:])
    # The fake model favours "positive" by 0.1 nats on content-free inputs; calibration divides that out.
    uncalibrated = predictor.with_calibrator(NoCalibration())
    none = await uncalibrated.run(uncalibrated.plan_for(plan.prompts), scorer)
    assert none.predictions[0].probs == none.predictions[0].uncalibrated_probs
    assert result.predictions[0].probs["positive"] < none.predictions[0].probs["positive"]


async def test_random_selection_shares_one_set_estimated_once():
    builder, scorer, _ = fake_builder([f"{w} film {i}" for i, w in enumerate(["great", "awful", "fun"] * 4)],
                                      [LABELS[i % 2] for i in range(12)])
    cache = BiasCache()
    calibration_prompts = []
    for texts in (["great 1", "awful 2", "great 3", "awful 4"], ["fun 5", "bad 6", "nice 7"]):
        predictor = Predictor(builder, LABELS, RandomRetriever(), FixedCount(3),
                              DomainCalibrator(DEFAULT_DOMAIN, WORDS, cache), seed=7)
        assert not predictor.needs_embeddings
        plan = predictor.plan(_queries(*texts))
        assert len({tuple(p.demo_rows) for p in plan.prompts}) == 1
        calibration_prompts.append(len(plan.calibration.prompts))
        result = await predictor.run(plan, scorer)
        assert all(p.probs != p.uncalibrated_probs for p in result.predictions)
    assert calibration_prompts == [5, 0]  # 5 strings, once for every batch that shares the set


def test_one_seed_per_query_draws_a_random_set_per_query():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    predictor = Predictor.uncalibrated(builder, LABELS, "random", 3)
    queries = _queries(*[f"query {i}" for i in range(6)])
    prompts = predictor.prompts_for(queries, seeds=[10 + i for i in range(6)])
    assert len({tuple(p.demo_rows) for p in prompts}) > 1
    assert predictor.prompts_for(queries[2:3], seeds=[12])[0].demo_rows == prompts[2].demo_rows
    same = Predictor.uncalibrated(builder, LABELS, "random", 3, seed=12).prompts_for(queries[:2])
    assert [p.demo_rows for p in same] == [prompts[2].demo_rows] * 2


async def test_chunks_answer_what_one_batch_would():
    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS)
    texts = ["great fun", "boring", "awful film", "fun plot", "great mess"]
    vectors = embedder.embed(texts)
    predictor = Predictor.uncalibrated(builder, LABELS, "knn", 2)
    whole = (await predictor.run(predictor.plan(_queries(*texts), vectors), scorer)).predictions
    parts = [(part, result.predictions) async for part, result in
             predictor.predict_in_chunks(_queries(*texts), vectors, scorer, chunk=2)]
    assert [part for part, _ in parts] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert [p for _, predictions in parts for p in predictions] == whole
