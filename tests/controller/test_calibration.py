"""Label-bias calibration: each calibrator's prompts, cache and biases (domain calibration's cheap settings:
strings per set, pooling, calibrated sets)."""

import numpy as np
import pytest

from controller.bias import BiasCache
from controller.calibration import (
    BatchCalibrator,
    CalibrationPrompts,
    CalibrationSources,
    Calibrator,
    ContextualCalibrator,
    DomainCalibrator,
    NoCalibration,
    calibrator_for,
    demo_ids_of,
)
from controller.calibration_fit import CountCalibration, TaskCalibration
from controller.counts import FixedCount
from controller.domain import (
    DEFAULT_DOMAIN,
    REFERENCE_DOMAIN,
    UNFITTED_DOMAIN,
    DomainSettings,
    DomainWords,
    content_free_queries,
)
from controller.planning import build_prompts
from controller.predictor import Predictor
from controller.retrieval import DiverseRetriever, KnnRetriever, RandomRetriever
from tests.fakes import fake_builder

LABELS = ["positive", "negative"]
TEXTS = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fun", "boring", "nice", "bad"] * 3)]
POOL_LABELS = [LABELS[i % 2] for i in range(len(TEXTS))]
WORDS = DomainWords.from_inputs([{"text": t} for t in TEXTS], ["text"])
PER_INPUT = DiverseRetriever()  # sets that are neither shared nor kNN


def test_each_method_is_one_registered_class():
    class Spy(DomainCalibrator):  # a subclass of a method does not take its name
        pass

    assert Calibrator.methods["domain"] is DomainCalibrator
    with pytest.raises(TypeError):
        type("Twice", (Calibrator,), {"name": "domain"})
    assert set(Calibrator.methods) == {"none", "contextual", "domain", "batch", "auto"}
    assert isinstance(calibrator_for("none"), NoCalibration)
    assert isinstance(calibrator_for("contextual"), ContextualCalibrator)
    domain = calibrator_for("domain", CalibrationSources(domain=REFERENCE_DOMAIN, words=lambda: WORDS))
    assert isinstance(domain, DomainCalibrator) and domain.settings == REFERENCE_DOMAIN and domain.words is WORDS
    asked: list[int] = []
    calibrator_for("contextual", CalibrationSources(words=lambda: asked.append(1) or WORDS))
    assert not asked  # only domain calibration reads the words
    with pytest.raises(ValueError):
        calibrator_for("magic")  # type: ignore[arg-type]


def _setup(prefix_cache: bool = False):
    """Twelve prompts, each with its own set of three demonstrations."""
    builder, scorer, _ = fake_builder(TEXTS, POOL_LABELS, prefix_cache=prefix_cache)
    queries = [{"text": f"query {w} {i}"} for i, w in enumerate(["great", "awful", "fun", "boring"] * 3)]
    rows = [[(i + j) % len(TEXTS) for j in range(3)] for i in range(len(queries))]
    return builder, scorer, build_prompts(builder, queries, rows, PER_INPUT.trim)


async def _run(builder, scorer, prompts, calibrator, retriever=PER_INPUT):
    predictor = Predictor(builder, LABELS, retriever, FixedCount(3), calibrator)
    plan = predictor.plan_for(prompts)
    return plan, await predictor.run(plan, scorer)


def test_contextual_uses_the_content_free_inputs_under_every_set():
    builder, _, prompts = _setup()
    plan = ContextualCalibrator().calibration_prompts(builder, prompts, KnnRetriever(), seed=0)
    assert len(plan.demo_sets) == len(prompts) and plan.targets == list(range(len(prompts)))
    assert len(plan.prompts) == 3 * len(plan.demo_sets)
    assert NoCalibration().calibration_prompts(builder, prompts, KnnRetriever(), 0).prompts == []


def test_reference_draws_twenty_strings_per_set_and_each_set_its_own():
    builder, _, prompts = _setup()
    plan = DomainCalibrator(REFERENCE_DOMAIN, WORDS).calibration_prompts(builder, prompts, PER_INPUT, seed=1)
    assert len(plan.demo_sets) == len(prompts)  # demonstrations per input: every set distinct
    assert len(plan.prompts) == 20 * len(plan.demo_sets)
    queries = [tuple(ids[-8:]) for i, ids in plan.prompts if i in (0, 1)]  # the strings and what follows
    assert len(set(queries)) > 20  # two sets do not share their strings


def test_strings_depend_on_the_seed_and_the_set_not_on_the_rest_of_the_batch():
    builder, _, prompts = _setup()
    calibrator = DomainCalibrator(DomainSettings(samples=2), WORDS)
    whole = calibrator.calibration_prompts(builder, prompts, PER_INPUT, seed=1)
    alone = calibrator.calibration_prompts(builder, prompts[3:4], PER_INPUT, seed=1)
    index = whole.demo_sets.index(tuple(prompts[3].demo_rows))
    assert [ids for i, ids in whole.prompts if i == index] == [ids for _, ids in alone.prompts]
    other_seed = calibrator.calibration_prompts(builder, prompts[3:4], PER_INPUT, seed=2)
    assert [ids for _, ids in other_seed.prompts] != [ids for _, ids in alone.prompts]
    # The first string of twenty is the string of one: fewer samples are a prefix of more.
    one = DomainCalibrator(DomainSettings(samples=1), WORDS).calibration_prompts(builder, prompts[3:4], PER_INPUT,
                                                                                 seed=1)
    assert one.prompts[0][1] == alone.prompts[0][1]


async def test_max_sets_calibrates_a_few_sets_and_pools_for_the_rest():
    builder, scorer, prompts = _setup()
    plan, result = await _run(builder, scorer, prompts,
                              DomainCalibrator(DomainSettings(samples=1, pooling=1.0, max_sets=3), WORDS))
    assert len(plan.calibration.prompts) == 3
    assert sorted({i for i, _ in plan.calibration.prompts}) == [0, 6, 11]  # spread over the batch
    biases = {tuple(p.demo_rows): np.array(list(p.probs.values())) / np.array(list(p.uncalibrated_probs.values()))
              for p in result.predictions}
    ratios = [b / b.sum() for b in biases.values()]
    for r in ratios[1:]:  # pooling 1: every set divided by the same bias
        assert np.allclose(r, ratios[0])
    assert not np.allclose(ratios[0], [0.5, 0.5])


async def test_bias_cache_skips_sets_already_estimated_with_the_same_answer():
    builder, scorer, prompts = _setup()
    cache = BiasCache()
    settings = DomainSettings(samples=2)
    _, first = await _run(builder, scorer, prompts, DomainCalibrator(settings, WORDS, cache))
    assert len(cache) == len(prompts)
    again, second = await _run(builder, scorer, prompts, DomainCalibrator(settings, WORDS, cache))
    assert again.calibration.prompts == [] and len(again.calibration.cached) == len(prompts)
    assert [p.probs for p in second.predictions] == [p.probs for p in first.predictions]
    assert second.usage.calibration_tokens == 0
    # Another seed draws other strings: not the same estimate; nor is another method's.
    assert DomainCalibrator(settings, WORDS, cache).calibration_prompts(builder, prompts, PER_INPUT, seed=1).prompts
    assert ContextualCalibrator(cache).calibration_prompts(builder, prompts, PER_INPUT, seed=0).prompts


async def test_calibration_tokens_count_computed_tokens_and_cache_hits_apart():
    builder, scorer, prompts = _setup(prefix_cache=True)
    plan, result = await _run(builder, scorer, prompts, DomainCalibrator(DomainSettings(samples=3), WORDS))
    sent = sum(len(ids) for _, ids in plan.calibration.prompts)
    assert result.usage.calibration_cached_tokens > 0  # the demonstrations were read from the input's prompt
    assert result.usage.calibration_tokens + result.usage.calibration_cached_tokens == sent
    assert result.usage.calibration_tokens < sent / 2


async def test_unfitted_default_leaves_knn_demonstrations_uncalibrated_but_not_zero_shot_prompts():
    builder, scorer, _ = _setup()
    queries = [{"text": "query great 1"}, {"text": "query awful 2"}, {"text": "query fun 3"}]
    prompts = build_prompts(builder, queries, [[0, 1, 2], [3, 4, 5], []], KnnRetriever().trim)
    unfitted = DomainCalibrator(UNFITTED_DOMAIN, WORDS)
    plan, result = await _run(builder, scorer, prompts, unfitted, KnnRetriever())
    assert {plan.calibration.demo_sets[i] for i, _ in plan.calibration.prompts} == {()}  # the zero-shot set only
    assert len(plan.calibration.prompts) == UNFITTED_DOMAIN.samples
    assert result.predictions[0].probs == result.predictions[0].uncalibrated_probs
    assert result.predictions[0].calibration == "none" and result.predictions[2].calibration == "domain"
    assert result.predictions[2].probs != result.predictions[2].uncalibrated_probs
    # "domain" itself calibrates what each input is served with, kNN sets included: 2 strings a set.
    plan, result = await _run(builder, scorer, prompts, DomainCalibrator(DEFAULT_DOMAIN, WORDS), KnnRetriever())
    assert len(plan.calibration.prompts) == 2 * 3 and {p.calibration for p in result.predictions} == {"domain"}
    # The same prompts with random demonstrations, or the reference settings, calibrate every set.
    shared = unfitted.calibration_prompts(builder, prompts, RandomRetriever(), 0)
    assert len(shared.prompts) == UNFITTED_DOMAIN.samples_for(shared_set=True) * len(shared.demo_sets)
    reference = DomainCalibrator(REFERENCE_DOMAIN, WORDS).calibration_prompts(builder, prompts, KnnRetriever(), 0)
    assert len(reference.prompts) == 20 * len(reference.demo_sets)
    assert DEFAULT_DOMAIN.samples_for(shared_set=False) == 2 and REFERENCE_DOMAIN.samples_for(shared_set=True) == 20


def test_domain_falls_back_to_content_free_inputs_without_domain_text():
    builder, _, prompts = _setup()
    empty = DomainWords.from_inputs([], ["text"])
    for words in (None, empty):
        plan = DomainCalibrator(DEFAULT_DOMAIN, words).calibration_prompts(builder, prompts, KnnRetriever(), 0)
        assert len(plan.prompts) == 3 * len(prompts)  # kNN sets too: there is nothing else to go on


def _inputs(*rows):
    return [np.array(r, dtype=float) for r in rows]


def test_batch_calibration_of_a_batch_that_is_nine_tenths_one_label():
    """The batch's mean is taken for the model's bias. When the batch itself is 90% one label, that label's
    share is divided out too: the least confident of its inputs flip to the other label."""
    builder, _, prompts = _setup()
    majority = [[0.95, 0.05], [0.9, 0.1], [0.85, 0.15], [0.8, 0.2], [0.75, 0.25], [0.7, 0.3], [0.68, 0.32],
                [0.66, 0.34], [0.64, 0.36]]
    inputs = _inputs(*majority, [0.2, 0.8])  # nine of the first label (all predicted right), one of the second
    out = BatchCalibrator().calibrate(CalibrationPrompts(), [], prompts[:10], inputs)
    labels = [int(np.argmax(p)) for p, _ in out]
    assert labels[-1] == 1 and sum(labels[:9]) >= 3  # right answers of the majority now read as the minority
    assert {got for _, got in out} == {"batch"}


def test_a_lone_input_under_batch_takes_the_fitted_estimate_or_stays_uncalibrated():
    builder, _, prompts = _setup()
    alone = _inputs([0.7, 0.3])

    def lone(calibrator):
        plan = calibrator.calibration_prompts(builder, prompts[:1], PER_INPUT, 0)
        return calibrator.calibrate(plan, [], prompts[:1], alone)[0]

    assert lone(BatchCalibrator())[1] == "none"
    fit = TaskCalibration("knn", {3: CountCalibration("none", held_back_mean=np.array([0.8, 0.2]))})
    probs, got = lone(BatchCalibrator(fit=fit))
    assert got == "batch:fitted" and probs.argmax() == 1  # 0.7/0.8 < 0.3/0.2
    # A fit made under one shared set does not serve another.
    other_set = TaskCalibration("knn", {3: CountCalibration("none", held_back_mean=np.array([0.8, 0.2]),
                                                            demo_ids=("e3", "e4", "e5"))})
    assert demo_ids_of(builder, prompts[0]) != ("e3", "e4", "e5")
    assert lone(BatchCalibrator(fit=other_set))[1] == "none"
    sources = CalibrationSources(selection="random", fit=fit)  # fitted for kNN only: not for random selection
    assert calibrator_for("batch", sources).fit is None


async def test_auto_applies_each_count_s_fitted_calibration_and_temperature():
    builder, scorer, _ = _setup()
    queries = [{"text": "query great 1"}, {"text": "query awful 2"}, {"text": "query fun 3"}]
    prompts = build_prompts(builder, queries, [[], [3, 4, 5], [0, 1, 2]], KnnRetriever().trim)
    at_zero = CountCalibration("batch", temperature=2.0, held_back_mean=np.array([0.7, 0.3]))
    at_three = CountCalibration("none", temperature=0.5)
    auto = calibrator_for("auto", CalibrationSources(fit=TaskCalibration("knn", {0: at_zero, 3: at_three})))
    plan, result = await _run(builder, scorer, prompts, auto, KnnRetriever())
    assert plan.calibration.prompts == []  # neither needs calibration prompts
    raws = [np.array([p.uncalibrated_probs[label] for label in LABELS]) for p in result.predictions]
    assert [p.calibration for p in result.predictions] == ["batch:fitted", "none", "none"]
    assert np.allclose(list(result.predictions[0].probs.values()), at_zero.apply(raws[0]))
    assert np.allclose(list(result.predictions[1].probs.values()), at_three.apply(raws[1]))
    # Another selection than the fit's: the unfitted default (kNN sets uncalibrated, zero-shot prompts domain).
    other = calibrator_for("auto", CalibrationSources(selection="diverse", fit=TaskCalibration("knn", {0: at_zero})))
    assert other.fit is None


async def test_auto_domain_counts_get_prompts_and_answers_never_depend_on_companions():
    builder, scorer, _ = _setup()
    queries = [{"text": f"query {w} {i}"} for i, w in enumerate(["great", "awful", "fun", "boring"])]
    prompts = build_prompts(builder, queries, [[0, 1], [2, 3], [4, 5], [6, 7]], RandomRetriever().trim)
    fit = TaskCalibration("random", {2: CountCalibration("domain", temperature=1.5)})
    sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache(), fit=fit)
    plan, whole = await _run(builder, scorer, prompts, calibrator_for("auto", sources), RandomRetriever())
    assert len(plan.calibration.prompts) == 4 * DEFAULT_DOMAIN.samples_for(shared_set=True)
    assert {p.calibration for p in whole.predictions} == {"domain"}
    for fitted in (fit, None):  # fitted or not, an input's answer is its own
        sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache(), fit=fitted)
        together = (await _run(builder, scorer, prompts[::-1], calibrator_for("auto", sources),
                               RandomRetriever()))[1].predictions[::-1]
        for i, prompt in enumerate(prompts):
            sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache(), fit=fitted)
            alone = (await _run(builder, scorer, [prompt], calibrator_for("auto", sources), RandomRetriever()))[1]
            assert np.allclose(list(alone.predictions[0].probs.values()), list(together[i].probs.values()))


async def test_auto_serves_each_fitted_prompt_method_with_its_own_prompts():
    builder, scorer, _ = _setup()
    queries = [{"text": f"query {w} {i}"} for i, w in enumerate(["great", "awful", "fun", "boring"])]
    prompts = build_prompts(builder, queries, [[0, 1], [2, 3], [4], [5]], RandomRetriever().trim)
    fit = TaskCalibration("random", {2: CountCalibration("contextual", temperature=0.8),
                                     1: CountCalibration("domain", temperature=1.2)})
    sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache(), fit=fit)
    plan, result = await _run(builder, scorer, prompts, calibrator_for("auto", sources), RandomRetriever())
    shared = DEFAULT_DOMAIN.samples_for(shared_set=True)
    assert len(plan.calibration.prompts) == 2 * len(content_free_queries(["text"])) + 2 * shared
    assert [p.calibration for p in result.predictions] == ["contextual", "contextual", "domain", "domain"]
    # Each input as its method alone would calibrate it, then the count's temperature.
    for method, rows, chosen in (("contextual", [0, 1], fit.counts[2]), ("domain", [2, 3], fit.counts[1])):
        alone_sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache())
        alone = (await _run(builder, scorer, [prompts[i] for i in rows], calibrator_for(method, alone_sources),
                            RandomRetriever()))[1]
        for i, p in zip(rows, alone.predictions, strict=True):
            expected = chosen.with_temperature(np.array([p.probs[label] for label in LABELS]))
            assert np.allclose(list(result.predictions[i].probs.values()), expected)


async def test_a_set_whose_strings_never_fit_stays_uncalibrated_whatever_its_companions():
    long_texts = [" ".join(["long"] * 230 + [str(i)]) for i in range(2)]
    texts = [f"great film number {i}" for i in range(6)] + long_texts
    builder, scorer, _ = fake_builder(texts, ["positive", "negative"] * 4)
    words = DomainWords.from_inputs([{"text": t} for t in texts], ["text"])  # strings ~60 words long
    queries = [{"text": "query great"}, {"text": "query awful"}]
    prompts = build_prompts(builder, queries, [[0, 1], [6, 7]], PER_INPUT.trim)
    assert all(len(p.token_ids) <= builder.max_prompt_tokens for p in prompts)  # the inputs themselves fit
    settings = DomainSettings(samples=2, pooling=0.0)

    def calibrator():
        return DomainCalibrator(settings, words, BiasCache())

    _, together = await _run(builder, scorer, prompts, calibrator())
    assert [p.calibration for p in together.predictions] == ["domain", "none"]
    _, alone = await _run(builder, scorer, prompts[1:], calibrator())
    assert alone.predictions[0].calibration == "none"
    assert together.predictions[1].probs == alone.predictions[0].probs == alone.predictions[0].uncalibrated_probs



async def test_auto_serves_a_shared_set_s_fit_only_to_that_set():
    builder, scorer, _ = _setup()
    queries = [{"text": "query great 1"}, {"text": "query awful 2"}]
    prompts = build_prompts(builder, queries, [[0, 1], [2, 3]], RandomRetriever().trim)
    fitted_set = demo_ids_of(builder, prompts[0])
    fit = TaskCalibration("random", {2: CountCalibration("batch", temperature=2.0, held_back_mean=np.array(
        [0.7, 0.3]), demo_ids=fitted_set)})
    sources = CalibrationSources(selection="random", words=lambda: WORDS, cache=BiasCache(), fit=fit)
    _, result = await _run(builder, scorer, prompts, calibrator_for("auto", sources), RandomRetriever())
    assert result.predictions[0].calibration == "batch:fitted"
    raw = np.array([result.predictions[0].uncalibrated_probs[label] for label in LABELS])
    assert np.allclose(list(result.predictions[0].probs.values()), fit.counts[2].apply(raw))
    # The other set was not fitted: the unfitted default (the shared set domain-calibrated).
    assert result.predictions[1].calibration == "domain"


async def test_no_calibration_prompt_is_empty_where_the_template_puts_no_text_around_the_input():
    """Contextual calibration's "" under no demonstrations, with a template that adds no text, would be an empty
    prompt: it is left out, the other content-free inputs still estimate the bias; under demonstrations it stays."""
    builder, scorer, _ = fake_builder(TEXTS, POOL_LABELS, template="{text}{label}")
    zero_shot = build_prompts(builder, [{"text": "great film"}], [[]], PER_INPUT.trim)
    for calibrator in (ContextualCalibrator(), DomainCalibrator(DEFAULT_DOMAIN, None),
                       DomainCalibrator(DEFAULT_DOMAIN, DomainWords.from_inputs([{"text": ""}], ["text"]))):
        plan = calibrator.calibration_prompts(builder, zero_shot, KnnRetriever(), seed=0)
        assert plan.prompts and all(ids for _, ids in plan.prompts), type(calibrator).__name__
    plan, result = await _run(builder, scorer, zero_shot, ContextualCalibrator())
    assert len(plan.calibration.prompts) == 2 and result.predictions[0].calibration == "contextual"
    with_demos = build_prompts(builder, [{"text": "great film"}], [[0, 1]], PER_INPUT.trim)
    plan = ContextualCalibrator().calibration_prompts(builder, with_demos, KnnRetriever(), seed=0)
    assert len(plan.prompts) == 3
