"""A task's fit as one library call, without a server: what it holds back, what it fits, what it reports."""

from dataclasses import replace

import numpy as np
import pytest

from controller.cascade import HEAD_STAGE, HIDDEN_STAGE, Cascade
from controller.errors import FitError
from controller.fitting import (
    FitRequest,
    TaskExamples,
    TaskToFit,
    affordable_counts,
    fit_task,
    needed_labeled,
)
from controller.meta import MetaController
from controller.templates import PromptTemplate
from controller.training import MIN_TRAIN_SIZE
from tests.fakes import FakeEmbedder, FakeScorer

LABELS = ["positive", "negative"]
WORDS = ["great", "awful", "fun", "boring", "lovely", "dull"]


def _task(n_labeled: int, n_unlabeled: int = 0, template: str = "Input: {text}\nLabel: {label}",
          empty: int = 0) -> TaskToFit:
    texts = ["" if i < empty else f"{WORDS[i % len(WORDS)]} film number {i}" for i in range(n_labeled + n_unlabeled)]
    labels = [LABELS[i % 2] if i < n_labeled else None for i in range(len(texts))]
    examples = TaskExamples(ids=[f"e{i}" for i in range(len(texts))], inputs=[{"text": t} for t in texts],
                            labels=labels, embeddings=FakeEmbedder().embed(texts))
    return TaskToFit(labels=LABELS, verbalizers={label: label for label in LABELS},
                     template=PromptTemplate.parse(template), examples=examples)


async def test_a_fit_is_one_call_that_returns_what_serving_needs_and_a_report():
    task = _task(60, n_unlabeled=5)
    seen: list[float] = []
    fit, report = await fit_task(task, FitRequest((0, 1, 2), train_size=30, selection="knn", seed=3, default_k=2),
                                 FakeScorer(), seen.append)
    assert isinstance(fit.controller, MetaController) and isinstance(fit.cascade, Cascade)
    assert fit.calibration is not None and set(fit.calibration.counts) == {0, 1, 2}
    assert fit.model == FakeScorer().model_name
    assert report.candidate_k == [0, 1, 2] and report.train_size == 30 and report.n_labeled == 60
    assert report.validation["n_train"] + report.validation["n_validation"] == 30
    assert [row["k"] for row in report.validation["fixed"]] == [0, 1, 2]
    assert report.cost.prompt_tokens > 0 and report.cost.computed_tokens >= report.cost.prompt_tokens
    assert seen and seen == sorted(seen) and seen[-1] <= 0.95
    document = report.as_dict()
    assert document["metadata"] == {"model": fit.model, "labels": LABELS, "scikit_learn": report.scikit_learn,
                                    "n_labeled": 60}
    assert document["cascade"]["stages"] == list(fit.cascade.stages) == report.choice["stages"]
    assert "k=2" in {c["option"] for c in report.choice["candidates"]}


async def test_the_task_s_default_count_is_always_weighed_where_the_pool_can_spare_it():
    _, report = await fit_task(_task(60), FitRequest((0, 1), train_size=30, selection="knn", seed=0, default_k=8),
                               FakeScorer())
    assert report.candidate_k == [0, 1, 8]
    _, small = await fit_task(_task(24), FitRequest((0, 1), train_size=30, selection="knn", seed=0, default_k=8),
                              FakeScorer())
    assert small.candidate_k == [0, 1]


async def test_the_held_back_set_leaves_the_largest_count_its_demonstrations():
    _, report = await fit_task(_task(30), FitRequest((0, 4), train_size=500, selection="knn", seed=0, default_k=4),
                               FakeScorer())
    assert report.train_size == 30 - 4


async def test_a_task_with_too_few_labeled_examples_is_refused():
    with pytest.raises(FitError, match="needs at least 28"):
        await fit_task(_task(27), FitRequest((0, 8), train_size=20, selection="knn", seed=0, default_k=4),
                       FakeScorer())


async def test_empty_inputs_that_leave_too_few_to_hold_back_are_refused():
    task = _task(30, template="{text}{label}", empty=15)
    with pytest.raises(FitError, match="empty input"):
        await fit_task(task, FitRequest((0, 1), train_size=100, selection="knn", seed=0, default_k=4), FakeScorer())


def test_counts_a_pool_can_afford():
    assert needed_labeled([0, 2, 16]) == MIN_TRAIN_SIZE + 16
    assert affordable_counts([16, 0, 2, 2, 4], MIN_TRAIN_SIZE + 4, max_k=32) == [0, 2, 4]
    assert affordable_counts([0, 2, 4], 1000, max_k=2) == [0, 2]


def test_a_request_takes_distinct_ascending_counts():
    with pytest.raises(ValueError):
        FitRequest((2, 0), train_size=20, selection="knn", seed=0, default_k=4)
    with pytest.raises(ValueError):
        FitRequest((2,), train_size=20, selection="knn", seed=0, default_k=4)


def test_the_pool_of_some_rows_keeps_their_order_and_embeddings():
    examples = _task(6, n_unlabeled=2).examples
    assert examples.labeled == list(range(6))
    pool = examples.pool([4, 1])
    assert list(pool.ids) == ["e4", "e1"] and list(pool.labels) == ["positive", "negative"]
    assert np.array_equal(pool.embeddings, examples.embeddings[[4, 1]])
    assert len(examples.pool([])) == 0


async def test_the_fit_reports_the_near_twins_it_left_out():
    task = _task(60)
    examples = task.examples
    alike = examples.embeddings[:1] + 0.001 * np.random.default_rng(0).normal(size=examples.embeddings.shape)
    alike /= np.linalg.norm(alike, axis=1, keepdims=True)  # every example a near-copy of the first
    twinned = TaskExamples(ids=examples.ids, inputs=examples.inputs, labels=examples.labels,
                           embeddings=alike.astype(np.float32))
    _, report = await fit_task(TaskToFit(task.labels, task.verbalizers, task.template, twinned),
                               FitRequest((0, 1), train_size=30, selection="knn", seed=0, default_k=1), FakeScorer())
    assert report.near_twins["held_back_with_twins"] == 30 and report.near_twins["pool_rows_left_out"] == 30 - 1
    assert report.near_twins["pool_groups"] == {"groups": 1, "examples": 60, "by_cosine": True}


async def test_a_shared_set_fit_keeps_held_back_examples_out_of_the_default_count_s_set_too():
    fit, report = await fit_task(_task(60), FitRequest((0, 1, 2), train_size=30, selection="random", seed=3,
                                                       default_k=8), FakeScorer())
    assert report.candidate_k == [0, 1, 2, 8]
    assert fit.calibration is not None and fit.calibration.counts[8].demo_ids is not None
    assert len(fit.calibration.counts[8].demo_ids) == 8


async def test_the_default_count_and_those_below_it_are_scored_on_more_examples_at_no_more_cost():
    task = _task(200)
    _, spread = await fit_task(task, FitRequest((0, 1, 8), train_size=40, selection="knn", seed=0, default_k=1),
                               FakeScorer())
    _, even = await fit_task(task, FitRequest((0, 1, 8), train_size=40, selection="knn", seed=0, default_k=8),
                             FakeScorer())
    assert even.held_back == {"0": 40, "1": 40, "8": 40}
    assert spread.held_back["0"] == spread.held_back["1"] > 40 > spread.held_back["8"] >= MIN_TRAIN_SIZE
    assert spread.cost.prompt_tokens <= 1.02 * even.cost.prompt_tokens  # the estimate of prompt lengths is close
    judged = {c["option"]: c["held_back"] for c in spread.choice["candidates"]}
    assert judged["k=0"] == spread.held_back["0"] and judged["k=8"] == spread.held_back["8"]
    assert spread.validation["n_train"] + spread.validation["n_validation"] == spread.held_back["8"]


async def test_the_embedding_head_is_weighed_and_chosen_where_it_answers_as_well_for_no_tokens():
    # Each word says the label: the head reads it from the embedding, with no prompt.
    fit, report = await fit_task(_task(200), FitRequest((0, 1, 2), train_size=40, selection="knn", seed=0,
                                                        default_k=2), FakeScorer())
    options = {c["option"]: c for c in report.choice["candidates"]}
    # The head is judged on every labeled example (cross-fitted). Sure of every held-back example, its cascades
    # would send none on: they are the head again, judged on fewer examples, and left out.
    assert options["head"]["mean_prompt_tokens"] == 0 and options["head"]["held_back"] == report.n_labeled == 200
    assert not any(name.startswith("head then") for name in options)
    assert options["head"]["macro_f1"] > 0.95
    assert report.choice["option"] == "head" and report.choice["stages"] == [HEAD_STAGE]
    assert fit.cascade == Cascade((HEAD_STAGE,), ()) and fit.head is not None
    assert report.cascade["held_back"]["mean_prompt_tokens"] == 0


async def test_the_embedding_head_is_tempered_on_its_cross_fitted_answers_and_reported():
    from controller.calibration_fit import fit_temperature
    from controller.heads import cross_fitted
    from controller.metrics import expected_calibration_error
    from controller.near_twins import cosine_for, twin_components

    task = _task(200)
    fit, report = await fit_task(task, FitRequest((0, 1, 2), train_size=40, selection="knn", seed=0, default_k=2),
                                 FakeScorer())
    # The temperature is the one that fits the head's own cross-fitted answers, and it changes no answer.
    examples = task.examples
    components, _ = twin_components(examples.embeddings, examples.inputs, cosine_for(["text"]))
    gold = np.array([LABELS.index(label) for label in examples.labels])
    raw = cross_fitted(examples.embeddings, gold, 2, components, 0)
    assert fit.head.temperature == pytest.approx(fit_temperature(raw, gold), rel=1e-6)
    assert fit.head.temperature != 1.0
    untempered = replace(fit.head, temperature=1.0)
    served, plain = fit.head.predict_proba(examples.embeddings), untempered.predict_proba(examples.embeddings)
    assert (served.argmax(axis=1) == plain.argmax(axis=1)).all() and not np.allclose(served, plain)
    figures = report.embedding_head
    assert figures["examples"] == 200 and figures["temperature"] == round(fit.head.temperature, 4)
    assert figures["ece"] <= round(expected_calibration_error(raw, gold), 4)
    assert report.as_dict()["embedding_head"] == figures
    assert report.cost.hidden_tokens == 0  # this engine reads no hidden states


async def test_an_engine_that_reads_hidden_states_adds_the_hidden_state_head_to_the_options(monkeypatch):
    from controller import fitting
    from service.fake_engine import FakeHiddenScorer

    scorer = FakeHiddenScorer()
    fit, report = await fit_task(_task(120), FitRequest((0, 1, 2), train_size=40, selection="knn", seed=0,
                                                        default_k=2), scorer)
    options = {c["option"]: c for c in report.choice["candidates"]}
    assert {"hidden k=0", "hidden k=1"} <= set(options) and len(scorer.hidden_calls) == 2 * 120
    served, other = report.hidden_head, report.hidden_head["others"][0]
    assert {served["count"], other["count"]} == {0, 1} and served["examples"] == other["examples"] == 120
    for figures in (served, other):
        option = options[f"hidden k={figures['count']}"]
        assert option["held_back"] == 120 and option["mean_prompt_tokens"] == figures["mean_prompt_tokens"]
    assert options["hidden k=1"]["mean_prompt_tokens"] > options["hidden k=0"]["mean_prompt_tokens"] > 0
    assert fit.hidden is not None and fit.hidden.count == served["count"]
    if report.choice["option"].startswith("hidden"):
        assert report.choice["option"] == f"hidden k={served['count']}"
    else:  # the better cross-fitted one stands by for decision "hidden"
        assert served["macro_f1"] >= other["macro_f1"]
    assert report.as_dict()["hidden_head"] == report.hidden_head
    # Every prompt the hidden-state engine read, both counts', is in the fit's cost, apart from the held-back pass.
    assert report.cost.hidden_tokens == sum(len(call) for call in scorer.hidden_calls) > 0
    assert report.as_dict()["cost"]["hidden_tokens"] == report.cost.hidden_tokens
    # Past its cap it reads that many distinct examples (the held-back ones among them: they come first).
    monkeypatch.setattr(fitting, "MAX_EXAMPLES", 50)
    capped = FakeHiddenScorer()
    _, report = await fit_task(_task(120), FitRequest((0, 1, 2), train_size=40, selection="knn", seed=0,
                                                      default_k=2), capped)
    assert report.hidden_head["examples"] == 50 and len(capped.hidden_calls) == 2 * 50
    held = max(report.held_back.values())
    queries = {" ".join(capped.decode(call)).rsplit("\n \n", 1)[-1] for call in capped.hidden_calls[:50]}
    assert held <= 50 and len(queries) == 50
    # An engine without hidden states makes no hidden-state head.
    fit, report = await fit_task(_task(120), FitRequest((0, 1, 2), train_size=40, selection="knn", seed=0,
                                                        default_k=2), FakeScorer())
    assert fit.hidden is None and report.hidden_head is None
    assert not any(c["option"].startswith("hidden") for c in report.choice["candidates"])


async def test_a_fit_that_chooses_a_hidden_state_head_reports_it_and_serves_it():
    from service.fake_engine import FakeHiddenScorer

    # Embeddings that say nothing of the label (so neither the embedding head nor kNN demonstrations help), and
    # verbalizers that never occur in the inputs (so the label tokens guess): only the hidden state, which reads
    # the input's words, knows the label.
    task = _task(160)
    noise = np.random.default_rng(0).normal(size=task.examples.embeddings.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    task = replace(task, examples=replace(task.examples, embeddings=noise))
    fit, report = await fit_task(task, FitRequest((0, 1, 2), train_size=60, selection="knn", seed=0, default_k=2),
                                 FakeHiddenScorer())
    assert report.choice["option"].startswith("hidden k=") and fit.cascade == Cascade((HIDDEN_STAGE,), ())
    assert fit.hidden is not None and report.choice["option"] == f"hidden k={fit.hidden.count}"
    assert report.cascade["held_back"]["macro_f1"] > 0.7  # the label tokens and the embeddings guess (0.5)
    assert report.cascade["held_back"]["mean_k"] == fit.hidden.count


async def test_examples_the_hidden_state_head_cannot_read_are_left_to_the_end_not_a_failed_fit():
    from service.fake_engine import FakeHiddenScorer

    # Two empty inputs under a template with no text around them: no prompt at k=0.
    scorer = FakeHiddenScorer()
    fit, report = await fit_task(_task(60, template="{text}{label}", empty=2),
                                 FitRequest((0, 1), train_size=30, selection="knn", seed=0, default_k=1), scorer)
    assert report.hidden_head is not None and report.hidden_head["examples"] == 58
    assert all(call for call in scorer.hidden_calls)
