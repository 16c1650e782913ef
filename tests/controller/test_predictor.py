"""The predict pipeline on the fake scorer: options -> retriever, count policy, calibrator; plan -> score ->
calibrate; chunked predictions for jobs."""

import numpy as np
import pytest

from controller.bias import BiasCache
from controller.calibration import ContextualCalibrator, DomainCalibrator, NoCalibration
from controller.cascade import HEAD_STAGE, HIDDEN_STAGE, Cascade, margins
from controller.counts import ControllerCount, FixedCount, TaskDefaults
from controller.domain import DEFAULT_DOMAIN, DomainWords
from controller.heads import EmbeddingHead
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
    predictor = Predictor.from_options(builder, LABELS, options, TaskDefaults(3), words=lambda: WORDS)
    assert isinstance(predictor.retriever, RandomRetriever) and predictor.counts == FixedCount(3)
    assert isinstance(predictor.calibrator, DomainCalibrator) and predictor.calibrator.settings == DEFAULT_DOMAIN
    assert (predictor.seed, predictor.max_prompt_tokens) == (7, 90)
    controller = MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        np.random.default_rng(0).normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1)))
    auto = Predictor.from_options(builder, LABELS, PredictOptions(calibration="none"), TaskDefaults(3),
                                  controller)
    assert isinstance(auto.counts, ControllerCount) and isinstance(auto.calibrator, NoCalibration)


def test_auto_calibration_draws_words_from_the_task_s_inputs_alone():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    recent = DomainWords.from_inputs([{"text": "recent query words"}], ["text"])

    def calibrator(method, recent_words=lambda: recent):
        options = PredictOptions(calibration=method, selection="random")
        return Predictor.from_options(builder, LABELS, options, TaskDefaults(3), words=lambda: WORDS,
                                      recent_words=recent_words).calibrator

    assert calibrator("auto").unfitted.words is WORDS
    assert calibrator("domain").words is recent
    assert calibrator("domain", recent_words=None).words is WORDS


def test_the_task_defaults_serve_auto():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    controller = MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        np.random.default_rng(0).normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1)))
    cascade = Cascade((0, 2), (0.5,))

    def policy(defaults):
        return Predictor.from_options(builder, LABELS, PredictOptions(), defaults, controller,
                                      cascade=cascade).demos_policy

    assert policy(TaskDefaults(4)) == "cascade"
    assert policy(TaskDefaults(4, "controller")) == "controller"
    assert Predictor.from_options(builder, LABELS, PredictOptions(), TaskDefaults(2)).counts == FixedCount(2)


def test_embeddings_are_needed_only_where_something_reads_them():
    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    empty, _, _ = fake_builder([], [])

    def needs(selection, demos, pool=builder, controller=None):
        options = PredictOptions(demos=demos, selection=selection)
        return Predictor.from_options(pool, LABELS, options, TaskDefaults(4), controller).needs_embeddings

    controller = MetaController(candidate_k=(0, 1), embedding_dims=None).fit(
        np.random.default_rng(0).normal(size=(20, 70)), np.tile([[0, 1], [1, 1]], (10, 1)))
    assert needs("knn", 2) and needs("diverse", "auto") and not needs("knn", 0)
    assert not needs("random", 4)  # one shared set: nothing retrieved per input
    assert needs("random", "auto", controller=controller)  # the controller's features
    assert not needs("knn", 4, pool=empty)
    # A zero-shot first stage retrieves nothing, but the inputs it escalates to kNN demonstrations do.
    cascade = Cascade((0, 2), (0.5,))
    assert Predictor.from_options(builder, LABELS, PredictOptions(selection="knn"), TaskDefaults(4),
                                  cascade=cascade).needs_embeddings
    assert not Predictor.from_options(builder, LABELS, PredictOptions(selection="random"), TaskDefaults(4),
                                      cascade=cascade).needs_embeddings


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


async def test_a_cascade_escalates_the_unsure_to_their_own_neighbours_and_counts_every_stage():
    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS)
    texts = ["great fun", "boring plot", "awful film", "fun acting"]
    queries, vectors = _queries(*texts), embedder.embed(texts)
    # A threshold above every margin sends every input on; each is then answered as fixed k = 2 would answer it.
    options = PredictOptions(demos="auto", selection="knn", calibration="none")
    predictor = Predictor.from_options(builder, LABELS, options, TaskDefaults(4),
                                       cascade=Cascade((0, 2), (1.01,)))
    assert (predictor.counts, predictor.demos_policy) == (FixedCount(0), "cascade")
    result = await predictor.run(predictor.plan(queries, vectors if predictor.needs_embeddings else None), scorer)
    fixed = Predictor.uncalibrated(builder, LABELS, "knn", 2)
    two = (await fixed.run(fixed.plan(queries, vectors), scorer)).predictions
    zero_shot = [len(p.token_ids) for p in Predictor.uncalibrated(builder, LABELS, "knn", 0).prompts_for(queries)]
    for p, at_two, first in zip(result.predictions, two, zero_shot, strict=True):
        assert (p.stages, len(p.demo_rows), p.demo_rows) == ((0, 2), 2, at_two.demo_rows)
        assert (p.label, p.probs) == (at_two.label, at_two.probs)
        assert p.prompt_tokens == first + at_two.prompt_tokens
    assert result.usage.prompt_tokens == sum(p.prompt_tokens for p in result.predictions)
    # Under a budget the least confident go on, as many as it has room for; the rest keep their first answer.
    budget = sum(zero_shot) + two[0].prompt_tokens + two[1].prompt_tokens
    tight = Predictor.from_options(builder, LABELS, PredictOptions(demos="auto", selection="knn", calibration="none",
                                                                   max_prompt_tokens=budget),
                                   TaskDefaults(4), cascade=Cascade((0, 2), (1.01,)))
    limited = await tight.run(tight.plan(queries, vectors), scorer)
    assert limited.usage.prompt_tokens <= budget
    assert 0 < sum(len(p.stages) == 2 for p in limited.predictions) < len(texts)
    # Chunked scoring (the fit's, selective annotation's) scores one stage: it refuses a cascade rather than
    # answering every input at the first stage.
    with pytest.raises(ValueError, match="cascade"):
        async for _ in predictor.predict_in_chunks(queries, vectors, scorer, chunk=2):
            pass


async def test_a_later_cascade_stage_leaves_out_an_input_it_cannot_plan(monkeypatch):
    """An input a later stage cannot make a prompt of keeps its earlier answer; the others go on."""
    from controller.errors import EmptyPromptError

    builder, scorer, _ = fake_builder(TEXTS, POOL_LABELS)
    predictor = Predictor(builder, LABELS, KnnRetriever(), FixedCount(0), NoCalibration(),
                          cascade=Cascade((0, 2), (2.0,)))  # everything goes on
    plan = predictor.plan(_queries("plain one", "plain two", "plain three"))
    planned = Predictor.prompts_for

    def refusing(self, queries, embeddings=None, seeds=None):
        if self.counts == FixedCount(2) and {"text": "plain two"} in list(queries):
            raise EmptyPromptError(list(queries).index({"text": "plain two"}))
        return planned(self, queries, embeddings, seeds)

    monkeypatch.setattr(Predictor, "prompts_for", refusing)
    result = await predictor.run(plan, scorer)
    assert [p.stages for p in result.predictions] == [(0, 2), (0,), (0, 2)]


def _head(builder) -> EmbeddingHead:
    """The embedding head of the fake pool."""
    gold = np.array([LABELS.index(label) for label in builder.pool.labels])
    return EmbeddingHead.fit(builder.pool.embeddings, gold, len(LABELS), C=100.0)


async def test_the_embedding_head_answers_the_inputs_it_is_sure_of_and_the_model_the_rest():
    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS)
    head = _head(builder)
    texts = ["great fun film", "awful mess", "plain words here", "boring plot"]
    queries, vectors = _queries(*texts), embedder.embed(texts)
    margins_ = margins(head.predict_proba(vectors))
    threshold = float(np.median(margins_))  # half go on
    options = PredictOptions(demos="auto", selection="knn", calibration="none")
    predictor = Predictor.from_options(builder, LABELS, options, TaskDefaults(4),
                                       cascade=Cascade((HEAD_STAGE, 2), (threshold,)), head=head)
    assert predictor.needs_embeddings and predictor.counts == FixedCount(2) and predictor.cascade is None
    plan = predictor.plan(queries, vectors)
    assert plan.head is not None and len(plan.prompts) == len(plan.head.rows) == int((margins_ < threshold).sum())
    result = await predictor.run(plan, scorer)
    fixed = Predictor.uncalibrated(builder, LABELS, "knn", 2)
    at_two = (await fixed.run(fixed.plan(queries, vectors), scorer)).predictions
    probs = head.predict_proba(vectors)
    for i, p in enumerate(result.predictions):
        if margins_[i] >= threshold:
            assert (p.decision, p.prompt_tokens, p.stages, p.demo_rows) == ("head", 0, (), [])
            assert p.label == LABELS[int(probs[i].argmax())] and np.isclose(p.probs[LABELS[0]], probs[i, 0])
        else:
            assert (p.decision, p.label, p.stages, p.prompt_tokens) == ("tokens", at_two[i].label, (2,),
                                                                        at_two[i].prompt_tokens)
    assert result.usage.prompt_tokens == sum(p.prompt_tokens for p in result.predictions)
    # The head alone answers everything with no engine work; a head-first choice without its head (a fit from
    # a newer server) serves the unfitted default.
    alone = Predictor.from_options(builder, LABELS, options, TaskDefaults(4), cascade=Cascade((HEAD_STAGE,), ()),
                                   head=head)
    calls = len(scorer.calls)
    answered = await alone.run(alone.plan(queries, vectors), scorer)
    assert {p.decision for p in answered.predictions} == {"head"} and len(scorer.calls) == calls
    assert answered.usage.prompt_tokens == 0
    headless = Predictor.from_options(builder, LABELS, options, TaskDefaults(4),
                                      cascade=Cascade((HEAD_STAGE, 2), (threshold,)))
    assert (headless.head, headless.counts, headless.cascade, headless.demos_policy) == (
        None, FixedCount(4), None, "default")


def test_an_input_the_model_cannot_plan_after_the_head_is_named_by_its_place_in_the_request():
    from controller.errors import EmptyPromptError

    builder, _, embedder = fake_builder(TEXTS, POOL_LABELS, template="{text}{label}")
    head = _head(builder)
    texts = ["great fun film", "awful mess", ""]
    vectors = embedder.embed(texts)
    sure = margins(head.predict_proba(vectors))
    assert sure[0] > sure[2]
    # The first input is the head's; the others go on, and the empty one is the model's second prompt.
    predictor = Predictor.from_options(builder, LABELS, PredictOptions(calibration="none"), TaskDefaults(4),
                                       cascade=Cascade((HEAD_STAGE, 0), (float(sure[0]),)), head=head)
    with pytest.raises(EmptyPromptError) as raised:
        predictor.plan(_queries(*texts), vectors)
    assert raised.value.index == 2 and "inputs[2]" in str(raised.value)


def test_decision_serves_the_fit_s_choice_the_label_tokens_or_the_head_alone():
    from controller.errors import NoHeadError

    builder, _, _ = fake_builder(TEXTS, POOL_LABELS)
    head = _head(builder)
    then_two = Cascade((HEAD_STAGE, 2), (0.5,))

    def served(decision, cascade, with_head=True):
        p = Predictor.from_options(builder, LABELS, PredictOptions(decision=decision), TaskDefaults(4),
                                   cascade=cascade, head=head if with_head else None)
        return p.counts, p.head is not None, p.demos_policy

    assert served("auto", then_two) == (FixedCount(2), True, "cascade")
    assert served("tokens", then_two) == (FixedCount(2), False, "cascade")
    assert served("tokens", Cascade((HEAD_STAGE,), ())) == (FixedCount(4), False, "default")
    assert served("head", Cascade((1,), ())) == (FixedCount(0), True, "head")
    assert served("auto", Cascade((1,), ())) == (FixedCount(1), False, "cascade")
    with pytest.raises(NoHeadError):
        served("head", Cascade((1,), ()), with_head=False)


async def test_the_hidden_state_head_answers_from_each_prompt_s_hidden_state_at_its_count():
    from controller.errors import NoHeadError
    from controller.hidden_fit import fit_hidden_head

    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS, hidden=True)
    gold = np.array([LABELS.index(label) for label in builder.pool.labels])
    fitted = await fit_hidden_head(builder, builder.pool.inputs, builder.pool.embeddings, gold,
                                   np.arange(len(gold)), len(LABELS), scorer, seed=0, count=1)
    options = PredictOptions(calibration="none")
    texts = ["great fun film", "awful mess", "plain words here"]
    queries, vectors = _queries(*texts), embedder.embed(texts)
    served = Predictor.from_options(builder, LABELS, options, TaskDefaults(4), cascade=Cascade((HIDDEN_STAGE,), ()),
                                    hidden=fitted.head)
    assert (served.counts, served.hidden, served.demos_policy) == (FixedCount(1), fitted.head, "cascade")
    assert served.needs_embeddings and isinstance(served.calibrator, NoCalibration)
    plan = served.plan(queries, vectors)
    read, scored = len(scorer.hidden_calls), len(scorer.calls)
    result = await served.run(plan, scorer)
    assert len(scorer.hidden_calls) == read + 3 and len(scorer.calls) == scored  # no label tokens scored
    states = await scorer.hidden_states([p.token_ids for p in plan.prompts])
    probs = fitted.head.predict_proba(states, vectors)
    for p, prompt, row in zip(result.predictions, plan.prompts, probs, strict=True):
        assert (p.decision, p.stages, len(p.demo_rows), p.prompt_tokens) == ("hidden", (1,), 1, len(prompt.token_ids))
        assert p.label == LABELS[int(row.argmax())] and np.allclose([p.probs[label] for label in LABELS], row)
    assert result.usage.prompt_tokens == result.usage.computed_tokens == sum(len(p.token_ids) for p in plan.prompts)
    # Forced, refused, or missing.
    forced = Predictor.from_options(builder, LABELS, PredictOptions(decision="hidden"), TaskDefaults(4),
                                    cascade=Cascade((2,), ()), hidden=fitted.head)
    assert (forced.counts, forced.demos_policy) == (FixedCount(1), "hidden")
    tokens = Predictor.from_options(builder, LABELS, PredictOptions(decision="tokens"), TaskDefaults(4),
                                    cascade=Cascade((HIDDEN_STAGE,), ()), hidden=fitted.head)
    assert (tokens.hidden, tokens.counts, tokens.demos_policy) == (None, FixedCount(4), "default")
    missing = Predictor.from_options(builder, LABELS, options, TaskDefaults(4), cascade=Cascade((HIDDEN_STAGE,), ()))
    assert (missing.hidden, missing.counts, missing.demos_policy) == (None, FixedCount(4), "default")
    with pytest.raises(NoHeadError, match="hidden"):
        Predictor.from_options(builder, LABELS, PredictOptions(decision="hidden"), TaskDefaults(4))


async def test_the_hidden_state_head_s_prompts_are_never_trimmed_to_a_budget():
    from controller.errors import BudgetTooSmallError
    from controller.hidden_fit import fit_hidden_head

    builder, scorer, embedder = fake_builder(TEXTS, POOL_LABELS, hidden=True)
    gold = np.array([LABELS.index(label) for label in builder.pool.labels])
    fitted = await fit_hidden_head(builder, builder.pool.inputs, builder.pool.embeddings, gold,
                                   np.arange(len(gold)), len(LABELS), scorer, seed=0, count=1)
    texts = ["great fun film", "awful mess"]
    queries, vectors = _queries(*texts), embedder.embed(texts)

    def planned(budget):
        predictor = Predictor.from_options(builder, LABELS, PredictOptions(decision="hidden", max_prompt_tokens=budget),
                                           TaskDefaults(4), hidden=fitted.head)
        return predictor.plan(queries, vectors)

    ample = planned(None)
    needed = sum(len(p.token_ids) for p in ample.prompts)
    assert [len(p.demo_rows) for p in ample.prompts] == [1, 1]
    assert [len(p.demo_rows) for p in planned(needed).prompts] == [1, 1]
    with pytest.raises(BudgetTooSmallError):
        planned(needed - 1)  # a trimmed prompt is one the head was not fitted on
