"""Domain-context calibration's cheap settings: strings per set, pooling, calibrated sets, the bias cache,
and calibration tokens counted as computed."""

import numpy as np
import pytest

from controller.calibration import (
    DEFAULT_DOMAIN,
    REFERENCE_DOMAIN,
    BiasCache,
    DomainSettings,
    DomainWords,
    pool_biases,
)
from controller.planning import PromptBuilder, plan_batch, plan_rows, similarities_for
from controller.pool import LabeledPool
from controller.predict import plan_calibration, predict_batch
from controller.templates import PromptTemplate
from tests.fakes import FakeEmbedder, FakeScorer

TEMPLATE = PromptTemplate.parse("Input: {text}\nLabel: {label}")
LABELS = ["positive", "negative"]
TEXTS = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fun", "boring", "nice", "bad"] * 3)]
POOL_LABELS = [LABELS[i % 2] for i in range(len(TEXTS))]
WORDS = DomainWords.from_inputs([{"text": t} for t in TEXTS], ["text"])


def _setup(prefix_cache: bool = False):
    embedder, scorer = FakeEmbedder(), FakeScorer(prefix_cache=prefix_cache)
    pool = LabeledPool(ids=[f"e{i}" for i in range(len(TEXTS))], inputs=[{"text": t} for t in TEXTS],
                       labels=POOL_LABELS, embeddings=embedder.embed(TEXTS))
    builder = PromptBuilder(TEMPLATE, {label: label for label in LABELS}, pool, scorer.tokenize, 512, 1)
    queries = [{"text": f"query {w} {i}"} for i, w in enumerate(["great", "awful", "fun", "boring"] * 3)]
    vectors = embedder.embed([q["text"] for q in queries])
    rows = [[(i + j) % len(TEXTS) for j in range(3)] for i in range(len(queries))]  # a set per input
    planned = plan_rows(builder, queries, similarities_for(builder, len(queries), vectors), rows, None)
    return builder, scorer, planned


def test_pool_biases_shrinks_toward_the_log_mean_and_fills_missing_sets():
    own = {"a": np.array([0.8, 0.2]), "b": np.array([0.2, 0.8])}
    assert np.allclose(pool_biases(own, ["a", "b"], 0.0)["a"], [0.8, 0.2])
    full = pool_biases(own, ["a", "b", "c"], 1.0)
    for key in "abc":  # the geometric mean of 0.8/0.2 and 0.2/0.8 is uniform
        assert np.allclose(full[key], [0.5, 0.5])
    half = pool_biases(own, ["a"], 0.5)["a"]  # sqrt(0.8)/sqrt(0.2) = 2: 2/3 against 1/3
    assert np.allclose(half, [2 / 3, 1 / 3])
    assert pool_biases({}, ["a"], 0.5) == {}


def test_settings_reject_nonsense():
    with pytest.raises(ValueError):
        DomainSettings(samples=0)
    with pytest.raises(ValueError):
        DomainSettings(pooling=1.5)
    with pytest.raises(ValueError):
        DomainSettings(max_sets=0)


def test_reference_draws_twenty_strings_per_set_and_each_set_its_own():
    builder, _, planned = _setup()
    plan = plan_calibration(builder, planned, "domain", WORDS, seed=1, domain=REFERENCE_DOMAIN)
    assert len(plan.demo_sets) == len(planned)  # demonstrations per input: every set distinct
    assert len(plan.prompts) == 20 * len(plan.demo_sets)
    queries = [tuple(ids[-8:]) for i, ids in plan.prompts if i in (0, 1)]  # the strings and what follows
    assert len(set(queries)) > 20  # two sets do not share their strings


def test_strings_depend_on_the_seed_and_the_set_not_on_the_rest_of_the_batch():
    builder, _, planned = _setup()
    settings = DomainSettings(samples=2)
    whole = plan_calibration(builder, planned, "domain", WORDS, seed=1, domain=settings)
    alone = plan_calibration(builder, planned[3:4], "domain", WORDS, seed=1, domain=settings)
    index = whole.demo_sets.index(tuple(planned[3].demo_rows))
    assert [ids for i, ids in whole.prompts if i == index] == [ids for _, ids in alone.prompts]
    other_seed = plan_calibration(builder, planned[3:4], "domain", WORDS, seed=2, domain=settings)
    assert [ids for _, ids in other_seed.prompts] != [ids for _, ids in alone.prompts]
    # The first string of twenty is the string of one: fewer samples are a prefix of more.
    one = plan_calibration(builder, planned[3:4], "domain", WORDS, seed=1, domain=DomainSettings(samples=1))
    assert one.prompts[0][1] == alone.prompts[0][1]


async def test_max_sets_calibrates_a_few_sets_and_pools_for_the_rest():
    builder, scorer, planned = _setup()
    settings = DomainSettings(samples=1, pooling=1.0, max_sets=3)
    plan = plan_calibration(builder, planned, "domain", WORDS, seed=0, domain=settings)
    assert len(plan.prompts) == 3
    assert sorted({i for i, _ in plan.prompts}) == [0, 6, 11]  # spread over the batch
    result = await predict_batch(builder, planned, plan, LABELS, scorer)
    biases = {tuple(p.demo_rows): np.array(list(p.probs.values())) / np.array(list(p.uncalibrated_probs.values()))
              for p in result.predictions}
    ratios = [b / b.sum() for b in biases.values()]
    for r in ratios[1:]:  # pooling 1: every set divided by the same bias
        assert np.allclose(r, ratios[0])
    assert not np.allclose(ratios[0], [0.5, 0.5])


async def test_bias_cache_skips_sets_already_estimated_with_the_same_answer():
    builder, scorer, planned = _setup()
    cache = BiasCache()
    settings = DomainSettings(samples=2)
    first = await predict_batch(builder, planned, plan_calibration(builder, planned, "domain", WORDS, 0, settings,
                                                                   cache), LABELS, scorer, cache)
    assert len(cache) == len(planned)
    again = plan_calibration(builder, planned, "domain", WORDS, 0, settings, cache)
    assert again.prompts == [] and len(again.cached) == len(planned)
    second = await predict_batch(builder, planned, again, LABELS, scorer, cache)
    assert [p.probs for p in second.predictions] == [p.probs for p in first.predictions]
    assert second.usage.calibration_tokens == 0
    # Another seed draws other strings: not the same estimate.
    assert plan_calibration(builder, planned, "domain", WORDS, 1, settings, cache).prompts


def test_bias_cache_drops_the_least_recently_used():
    cache = BiasCache(max_entries=2)
    cache.put("a", np.ones(2))
    cache.put("b", np.ones(2))
    assert cache.get("a") is not None
    cache.put("c", np.ones(2))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2


async def test_calibration_tokens_count_computed_tokens_and_cache_hits_apart():
    builder, scorer, planned = _setup(prefix_cache=True)
    plan = plan_calibration(builder, planned, "domain", WORDS, 0, DomainSettings(samples=3))
    result = await predict_batch(builder, planned, plan, LABELS, scorer)
    sent = sum(len(ids) for _, ids in plan.prompts)
    assert result.usage.calibration_cached_tokens > 0  # the demonstrations were read from the input's prompt
    assert result.usage.calibration_tokens + result.usage.calibration_cached_tokens == sent
    assert result.usage.calibration_tokens < sent / 2


async def test_default_leaves_knn_demonstrations_uncalibrated_but_not_zero_shot_prompts():
    builder, scorer, _ = _setup()
    embedder = FakeEmbedder()
    queries = [{"text": "query great 1"}, {"text": "query awful 2"}, {"text": "query fun 3"}]
    vectors = embedder.embed([q["text"] for q in queries])
    knn = plan_batch(builder, queries, vectors, [3, 3, 0], "knn", 0, None)
    plan = plan_calibration(builder, knn, "domain", WORDS, 0, DEFAULT_DOMAIN, selection="knn")
    assert {plan.demo_sets[i] for i, _ in plan.prompts} == {()}  # only the zero-shot prompt's (empty) set
    assert len(plan.prompts) == DEFAULT_DOMAIN.samples
    result = await predict_batch(builder, knn, plan, LABELS, scorer)
    assert result.predictions[0].probs == result.predictions[0].uncalibrated_probs
    assert result.predictions[2].probs != result.predictions[2].uncalibrated_probs
    # The same prompts with random demonstrations, or the reference settings, calibrate every set.
    random_plan = plan_calibration(builder, knn, "domain", WORDS, 0, DEFAULT_DOMAIN, selection="random")
    assert len(random_plan.prompts) == DEFAULT_DOMAIN.samples_for(shared_set=True) * len(random_plan.demo_sets)
    reference = plan_calibration(builder, knn, "domain", WORDS, 0, REFERENCE_DOMAIN, selection="knn")
    assert len(reference.prompts) == 20 * len(reference.demo_sets)


async def test_random_selection_shares_one_set_estimated_once():
    builder, scorer, _ = _setup()
    embedder, cache = FakeEmbedder(), BiasCache()
    batches = [[{"text": f"query {w} {i}"} for i, w in enumerate(words)] for words in (["great", "awful"] * 4,
                                                                                      ["fun", "bad", "nice"])]
    calibration_prompts = []
    for queries in batches:
        planned = plan_batch(builder, queries, embedder.embed([q["text"] for q in queries]), [3] * len(queries),
                             "random", 7, None)
        assert len({tuple(p.demo_rows) for p in planned}) == 1
        plan = plan_calibration(builder, planned, "domain", WORDS, 7, DEFAULT_DOMAIN, cache, "random")
        calibration_prompts.append(len(plan.prompts))
        result = await predict_batch(builder, planned, plan, LABELS, scorer, cache)
        assert all(p.probs != p.uncalibrated_probs for p in result.predictions)
    assert calibration_prompts == [5, 0]  # 5 strings, once for every batch that shares the set
    assert DEFAULT_DOMAIN.samples_for(shared_set=False) == 2 and REFERENCE_DOMAIN.samples_for(shared_set=True) == 20
