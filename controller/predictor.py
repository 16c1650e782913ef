"""The predict pipeline: a retriever, a count policy and a calibrator composed into plan -> score -> calibrate.

``plan`` is CPU work (retrieval, counts, rendering and tokenizing; run it off the event loop), ``score`` is the
engine's, ``calibrate`` divides each demonstration set's label bias out of its inputs' distributions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import astuple, dataclass, replace
from typing import Literal

import numpy as np

from controller.bias import BiasCache
from controller.calibration import (
    Calibration,
    CalibrationPrompts,
    CalibrationSources,
    Calibrator,
    NoCalibration,
    calibrator_for,
)
from controller.calibration_fit import TaskCalibration
from controller.cascade import NEVER, Cascade, escalation_order, margins
from controller.counts import ChosenCounts, CountPolicy, FixedCount, QueryBatch, TaskDefaults, count_policy
from controller.domain import DEFAULT_DOMAIN, DomainSettings, DomainWords
from controller.errors import BudgetTooSmallError, NoHeadError, UnplannableInputError
from controller.heads import EmbeddingHead
from controller.hidden_fit import HiddenHead, HiddenStateReader
from controller.meta import MetaController
from controller.planning import Prompt, PromptBuilder, build_prompts
from controller.retrieval import Retriever, Selection, per_query_seeds, retriever_for, similarities_to_pool
from controller.scoring import LabelScorer, ScoredPrompt, normalise_label_logprobs

Decision = Literal["auto", "tokens", "head", "hidden"]


@dataclass(frozen=True)
class PredictOptions:
    """What a predict request asks for, in the library's terms."""

    demos: int | Literal["auto"] = "auto"
    selection: Selection = "knn"
    calibration: Calibration = "auto"
    domain: DomainSettings = DEFAULT_DOMAIN
    seed: int = 0
    max_prompt_tokens: int | None = None
    # Who decides each label: "auto" (the fit's choice), "tokens" (the model's label tokens only, no head),
    # "head" (the embedding head alone, no prompt), "hidden" (the hidden-state head at its count).
    decision: Decision = "auto"


@dataclass(frozen=True)
class Prediction:
    label: str
    probs: dict[str, float]
    uncalibrated_probs: dict[str, float]
    demo_rows: list[int]  # of the prompt that answered
    prompt_tokens: int  # over every stage the input went through
    prompt: str
    calibration: str = "none"  # the calibration this input got
    stages: tuple[int, ...] = ()  # the count of each prompt it was scored with; the last one answered
    computed_tokens: int = 0  # what the engine computed for its prompts, prefix-cache hits excluded
    fitted_calibration: bool = False  # whether the task's fit calibrated it (not a method the client named)
    # Where the answer came from: "tokens" (the model's label tokens), "head" (the embedding head) or "hidden"
    # (the hidden-state head on the prompt's last hidden state).
    decision: str = "tokens"

    def then(self, later: Prediction) -> Prediction:
        """This input answered again at a later cascade stage: that answer, with both stages counted."""
        return replace(later, prompt_tokens=self.prompt_tokens + later.prompt_tokens,
                       stages=(*self.stages, *later.stages),
                       computed_tokens=self.computed_tokens + later.computed_tokens)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int  # prompts of the inputs
    calibration_tokens: int  # tokens the engine computed to estimate label bias (prefix-cache hits excluded)
    calibration_cached_tokens: int  # calibration prompts' tokens served from the prefix cache
    total_tokens: int  # every token the engine was given (label continuations included)
    cached_tokens: int  # of total_tokens, served from vLLM's prefix cache

    @property
    def computed_tokens(self) -> int:
        """What the engine really computed: every token, less prefix-cache hits."""
        return self.total_tokens - self.cached_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class PredictResult:
    predictions: list[Prediction]
    usage: Usage


@dataclass(frozen=True)
class HeadStage:
    """The embedding head as a cascade's first stage: it answers the inputs whose margin is at least
    ``threshold`` with no prompt; the rest go on to the model."""

    head: EmbeddingHead
    threshold: float

    def answer(self, probs: np.ndarray, labels: Sequence[str]) -> Prediction:
        as_dict = {label: float(p) for label, p in zip(labels, probs, strict=True)}
        return Prediction(label=labels[int(np.argmax(probs))], probs=as_dict, uncalibrated_probs=as_dict,
                          demo_rows=[], prompt_tokens=0, prompt="", stages=(), decision="head")


@dataclass(frozen=True)
class HeadAnswers:
    """What the head answered of a batch of ``n`` inputs: the plan's prompts are those of ``rows`` (the inputs
    it was unsure of, in order), the others are answered here."""

    n: int
    rows: list[int]
    answered: dict[int, Prediction]

    def merged(self, result: PredictResult) -> PredictResult:
        predictions = dict(self.answered)
        predictions.update(zip(self.rows, result.predictions, strict=True))
        return PredictResult([predictions[i] for i in range(self.n)], result.usage)


@dataclass(frozen=True)
class PredictionPlan:
    """Everything the engine is to score for a batch: the inputs' prompts, then the calibration prompts; and
    the queries as planned, which a cascade's later stages plan again with more demonstrations."""

    prompts: list[Prompt]
    calibration: CalibrationPrompts
    queries: Sequence[Mapping[str, str]] = ()
    embeddings: np.ndarray | None = None
    seeds: Sequence[int] = ()
    head: HeadAnswers | None = None  # where the embedding head answered some inputs without a prompt

    @property
    def n_prompts(self) -> int:
        return len(self.prompts) + len(self.calibration.prompts)


@dataclass(frozen=True)
class Scores:
    inputs: list[ScoredPrompt]
    calibration: list[ScoredPrompt]


def decided(options: PredictOptions, defaults: TaskDefaults, controller: MetaController | None,
            cascade: Cascade | None, labels: Sequence[str], pool_size: int, has_head: bool,
            hidden_count: int | None = None) -> ChosenCounts:
    """The counts ``count_policy`` chooses, as ``options.decision`` asks: "auto" serves the fit's choice, the
    embedding head first where it starts with it (and where the head is missing, as a fit from a newer server
    may be read, the unfitted default); "tokens" drops the heads (a head alone gives way to the unfitted
    default); "head" answers every input from the embedding head; "hidden" from the hidden-state head, at its
    count ``hidden_count``. Raises NoHeadError for "head" or "hidden" without that head."""
    if options.decision == "head":
        if not has_head:
            raise NoHeadError()
        return ChosenCounts(FixedCount(0), None, "head", NEVER)
    if options.decision == "hidden":
        if hidden_count is None or not pool_size:
            raise NoHeadError("hidden")
        return ChosenCounts(FixedCount(hidden_count), None, "hidden", hidden=True)
    chosen = count_policy(options.demos, defaults, controller, cascade, labels, pool_size)
    if chosen.hidden:
        if options.decision == "tokens" or hidden_count is None:
            return count_policy(options.demos, defaults, None, None, labels, pool_size)
        return replace(chosen, counts=FixedCount(hidden_count))
    if chosen.head_threshold is None:
        return chosen
    if options.decision == "tokens" and cascade is not None and len(cascade.stages) > 1:
        return replace(chosen, head_threshold=None)
    if options.decision == "tokens" or not has_head:
        return count_policy(options.demos, defaults, None, None, labels, pool_size)
    return chosen


def calibration_words(method: Calibration, words: Callable[[], DomainWords] | None,
                      recent_words: Callable[[], DomainWords] | None) -> Callable[[], DomainWords] | None:
    """The words domain calibration draws from. "auto", the default, takes the task's inputs alone: what it
    answers may depend on the pool and the fit, never on traffic. A method the client names may take recent
    queries too."""
    if method == "auto" or recent_words is None:
        return words
    return recent_words


@dataclass(frozen=True)
class Predictor:
    """Predictions for one task's pool: demonstrations from ``retriever``, counts from ``counts``, biases
    divided out by ``calibrator``. With a ``cascade``, ``counts`` is its first stage, and the inputs it is
    unsure of are scored again at the later stages' counts."""

    builder: PromptBuilder
    labels: Sequence[str]
    retriever: Retriever
    counts: CountPolicy
    calibrator: Calibrator
    seed: int = 0
    max_prompt_tokens: int | None = None
    cascade: Cascade | None = None
    # What chose the counts: "fixed" (asked for), "default" ("auto" without a fit that applies: the task's
    # default count), "cascade", "controller" or "head" (``decision: "head"``).
    demos_policy: str = "fixed"
    head: HeadStage | None = None  # the embedding head answers first (the fit's cascade starts with it, or asked)
    # The hidden-state head answers from each prompt's last hidden state instead of its label tokens.
    hidden: HiddenHead | None = None

    @classmethod
    def from_options(cls, builder: PromptBuilder, labels: Sequence[str], options: PredictOptions,
                     defaults: TaskDefaults, controller: MetaController | None = None,
                     words: Callable[[], DomainWords] | None = None, biases: BiasCache | None = None,
                     fitted: TaskCalibration | None = None, cascade: Cascade | None = None,
                     recent_words: Callable[[], DomainWords] | None = None,
                     head: EmbeddingHead | None = None, hidden: HiddenHead | None = None) -> Predictor:
        """The predictor a request's options describe: the task's ``defaults`` (a count alone: that default, the
        cascade serving a fitted "auto"), the fitted ``cascade`` and ``controller`` serve ``demos: "auto"``;
        ``words`` (from the task's inputs), ``recent_words`` (the same with its recent queries, where the service
        keeps them), ``biases`` (the cache valid for this pool) and the task's ``fitted`` calibration serve
        calibration; the fit's embedding ``head`` answers first where its cascade starts with it, and its
        ``hidden`` head answers where the fit chose it (or the request asks), with the kNN demonstrations and no
        calibration prompts: its probabilities are tempered on its own evidence."""
        sources = CalibrationSources(selection=options.selection, domain=options.domain,
                                     words=calibration_words(options.calibration, words, recent_words),
                                     cache=biases, fit=fitted)
        chosen = decided(options, defaults, controller, cascade, labels, len(builder.pool), head is not None,
                         hidden.count if hidden is not None else None)
        if chosen.hidden:
            return cls(builder=builder, labels=labels, retriever=retriever_for("knn"), counts=chosen.counts,
                       calibrator=NoCalibration(), seed=options.seed, max_prompt_tokens=options.max_prompt_tokens,
                       demos_policy=chosen.name, hidden=hidden)
        return cls(
            builder=builder,
            labels=labels,
            retriever=retriever_for(options.selection),
            counts=chosen.counts,
            calibrator=calibrator_for(options.calibration, sources),
            seed=options.seed,
            max_prompt_tokens=options.max_prompt_tokens,
            cascade=chosen.cascade,
            demos_policy=chosen.name,
            head=HeadStage(head, chosen.head_threshold) if head is not None and chosen.head_threshold is not None
            else None,
        )

    @classmethod
    def uncalibrated(cls, builder: PromptBuilder, labels: Sequence[str], selection: Selection, k: int,
                     seed: int = 0) -> Predictor:
        """k demonstrations each, no calibration: what controller training and two-stage vote-k score."""
        return cls(builder, labels, retriever_for(selection), FixedCount(k), NoCalibration(), seed)

    def with_calibrator(self, calibrator: Calibrator) -> Predictor:
        return replace(self, calibrator=calibrator)

    @property
    def needs_embeddings(self) -> bool:
        """Whether ``plan`` reads the queries' embeddings (the embedding head, retrieval or the controller's
        features), at the first stage or at a cascade's later one (a zero-shot first stage retrieves nothing, its
        escalations do)."""
        later = self.cascade.stages[1:] if self.cascade is not None else ()
        return self.head is not None or self.hidden is not None or len(self.builder.pool) > 0 and any(
            counts.needs_embeddings(self.retriever) for counts in (self.counts, *map(FixedCount, later)))

    def embedding_texts(self, queries: Sequence[Mapping[str, str]]) -> list[str]:
        """What to embed of each query for retrieval and the controller's features."""
        return [self.builder.template.embedding_text(q) for q in queries]

    def prompts_for(self, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray | None = None,
                    seeds: Sequence[int] | None = None) -> list[Prompt]:
        """Each query's prompt: its count, its demonstrations, fitted to the window and the budget. ``seeds``:
        one per query instead of the predictor's (random selection then draws a set per query)."""
        pool = self.builder.pool
        batch = QueryBatch(queries=queries, embeddings=embeddings,
                           similarities=similarities_to_pool(embeddings, pool, len(queries)),
                           seeds=per_query_seeds(self.seed if seeds is None else seeds, len(queries)))
        rows = self.counts.demo_rows(self.builder, self.retriever, batch, self.max_prompt_tokens)
        return build_prompts(self.builder, queries, rows, self.retriever.trim, self.max_prompt_tokens)

    def plan_for(self, prompts: list[Prompt]) -> PredictionPlan:
        """These prompts and their calibration prompts."""
        calibration = self.calibrator.calibration_prompts(self.builder, prompts, self.retriever, self.seed)
        return PredictionPlan(prompts, calibration)

    def plan(self, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray | None = None,
             seeds: Sequence[int] | None = None) -> PredictionPlan:
        seeds = per_query_seeds(self.seed if seeds is None else seeds, len(queries))
        if self.hidden is not None:
            return self._plan_hidden(queries, embeddings, seeds)
        if self.head is not None and embeddings is not None and len(queries):
            return self._plan_after_head(self.head, queries, embeddings, seeds)
        return replace(self.plan_for(self.prompts_for(queries, embeddings, seeds)), queries=queries,
                       embeddings=embeddings, seeds=seeds)

    def _plan_hidden(self, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray | None,
                     seeds: Sequence[int]) -> PredictionPlan:
        """The hidden-state head's prompts at its count, never trimmed to a budget (its head was fitted on
        prompts at that count): a budget they do not fit is the client's BudgetTooSmallError."""
        prompts = replace(self, max_prompt_tokens=None).prompts_for(queries, embeddings, seeds)
        total = sum(len(p.token_ids) for p in prompts)
        if self.max_prompt_tokens is not None and total > self.max_prompt_tokens:
            raise BudgetTooSmallError(total, self.max_prompt_tokens)
        return replace(self.plan_for(prompts), queries=queries, embeddings=embeddings, seeds=seeds)

    def _plan_after_head(self, head: HeadStage, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray,
                         seeds: Sequence[int]) -> PredictionPlan:
        """The head answers the inputs it is sure of; the others are planned as the model's first stage. An
        input the head answers is never planned, so it cannot fail planning."""
        probs = head.head.predict_proba(embeddings)
        unsure = margins(probs) < head.threshold
        rows = [int(i) for i in np.flatnonzero(unsure)]
        answered = {int(i): head.answer(probs[i], self.labels) for i in np.flatnonzero(~unsure)}
        sub_queries, sub_embeddings = [queries[i] for i in rows], embeddings[rows]
        sub_seeds = [seeds[i] for i in rows]
        try:
            prompts = self.prompts_for(sub_queries, sub_embeddings, sub_seeds) if rows else []
        except UnplannableInputError as exc:  # its index into the batch, not into the head's leftovers
            own = rows[exc.index]
            exc.args = tuple(str(a).replace(f"inputs[{exc.index}]", f"inputs[{own}]", 1) for a in exc.args)
            exc.index = own
            raise
        return replace(self.plan_for(prompts), queries=sub_queries, embeddings=sub_embeddings, seeds=sub_seeds,
                       head=HeadAnswers(len(queries), rows, answered))

    def continuations(self) -> list[str]:
        """What the engine scores after each prompt: every label's verbalizer as the template continues it."""
        return [self.builder.template.continuation(self.builder.verbalizers[label]) for label in self.labels]

    async def score(self, plan: PredictionPlan, scorer: LabelScorer) -> Scores:
        continuations = self.continuations()
        # Inputs first, calibration after: an input's prompt leaves its demonstrations in the engine's prefix
        # cache, so the calibration prompts that share them compute little more than their own query.
        inputs = await scorer.score([p.token_ids for p in plan.prompts], continuations)
        calibration = [ids for _, ids in plan.calibration.prompts]
        return Scores(inputs, await scorer.score(calibration, continuations) if calibration else [])

    def calibrate(self, plan: PredictionPlan, scores: Scores) -> PredictResult:
        distributions = [normalise_label_logprobs(s.label_logprobs) for s in scores.calibration]
        raws = [normalise_label_logprobs(s.label_logprobs) for s in scores.inputs]
        calibrated = self.calibrator.calibrate(plan.calibration, distributions, plan.prompts, raws)
        from_fit = self.calibrator.from_fit(plan.calibration, [got for _, got in calibrated])
        predictions: list[Prediction] = []
        for prompt, result, raw, (final, got), fitted in zip(plan.prompts, scores.inputs, raws, calibrated, from_fit,
                                                             strict=True):
            predictions.append(Prediction(
                label=self.labels[int(np.argmax(final))],
                probs={label: float(p) for label, p in zip(self.labels, final, strict=True)},
                uncalibrated_probs={label: float(p) for label, p in zip(self.labels, raw, strict=True)},
                demo_rows=list(prompt.demo_rows),
                prompt_tokens=result.prompt_tokens,
                prompt=prompt.text,
                calibration=got,
                stages=(len(prompt.demo_rows),),
                computed_tokens=result.computed_tokens,
                fitted_calibration=fitted,
            ))
        every = [*scores.inputs, *scores.calibration]
        usage = Usage(
            prompt_tokens=sum(s.prompt_tokens for s in scores.inputs),
            calibration_tokens=sum(s.computed_tokens for s in scores.calibration),
            calibration_cached_tokens=sum(s.cached_tokens for s in scores.calibration),
            total_tokens=sum(s.computed_tokens + s.cached_tokens for s in every),
            cached_tokens=sum(s.cached_tokens for s in every),
        )
        return PredictResult(predictions=predictions, usage=usage)

    async def read_hidden(self, plan: PredictionPlan, scorer: LabelScorer) -> PredictResult:
        """The hidden-state head's answers: each prompt's last hidden state, read by the engine, through the head.
        The pooling engine reports no prefix-cache hits: every prompt token counts as computed."""
        assert self.hidden is not None and plan.embeddings is not None
        if not isinstance(scorer, HiddenStateReader):
            raise TypeError("this engine reads no hidden states")
        states = await scorer.hidden_states([p.token_ids for p in plan.prompts]) if plan.prompts else None
        probs = self.hidden.predict_proba(states, plan.embeddings) if states is not None else np.zeros((0, 0))
        predictions = []
        for prompt, row in zip(plan.prompts, probs, strict=True):
            as_dict = {label: float(p) for label, p in zip(self.labels, row, strict=True)}
            predictions.append(Prediction(
                label=self.labels[int(np.argmax(row))], probs=as_dict, uncalibrated_probs=as_dict,
                demo_rows=list(prompt.demo_rows), prompt_tokens=len(prompt.token_ids), prompt=prompt.text,
                stages=(len(prompt.demo_rows),), computed_tokens=len(prompt.token_ids), decision="hidden"))
        tokens = sum(len(p.token_ids) for p in plan.prompts)
        return PredictResult(predictions, Usage(tokens, 0, 0, tokens, 0))

    async def run(self, plan: PredictionPlan, scorer: LabelScorer) -> PredictResult:
        """Score a plan on the engine and calibrate it; with a cascade, escalate the inputs it is unsure of; with
        the embedding head, its answers take their places beside the model's; with the hidden-state head, it
        answers them all."""
        if self.hidden is not None:
            return await self.read_hidden(plan, scorer)
        result = self.calibrate(plan, await self.score(plan, scorer)) if plan.prompts else PredictResult(
            [], Usage(0, 0, 0, 0, 0))
        if self.cascade is not None and plan.queries:
            result = await self._escalate(plan, result, scorer, self.cascade)
        return plan.head.merged(result) if plan.head is not None else result

    async def _escalate(self, plan: PredictionPlan, first: PredictResult, scorer: LabelScorer,
                        cascade: Cascade) -> PredictResult:
        """The cascade's later stages: each plans the inputs the stage before was unsure of at its count and
        scores them; their answers replace the earlier ones, their tokens add up. Under a budget the least
        confident go on first, as many as the budget has room for (the first stage spent its share)."""
        predictions, usage = list(first.predictions), first.usage
        probs = np.array([[p.probs[label] for label in self.labels] for p in predictions])
        spent, active = usage.prompt_tokens, list(range(len(predictions)))
        for stage, k in enumerate(cascade.stages[1:], start=1):
            order = [active[i] for i in escalation_order(probs[active], cascade.goes_on(stage - 1, probs[active]))]
            if not order:
                break
            later = replace(self, counts=FixedCount(k), cascade=None, max_prompt_tokens=None)
            order, prompts = await asyncio.to_thread(later._stage_prompts, plan, order)
            if not order:
                break
            if self.max_prompt_tokens is not None:
                kept = []
                for index, prompt in zip(order, prompts, strict=True):
                    if spent + len(prompt.token_ids) <= self.max_prompt_tokens:
                        spent += len(prompt.token_ids)
                        kept.append((index, prompt))
                order, prompts = [i for i, _ in kept], [p for _, p in kept]
                if not order:
                    break
            result = await later.run(await asyncio.to_thread(later.plan_for, prompts), scorer)
            for index, prediction in zip(order, result.predictions, strict=True):
                predictions[index] = predictions[index].then(prediction)
                probs[index] = [prediction.probs[label] for label in self.labels]
            usage, active = usage + result.usage, order
        return PredictResult(predictions=predictions, usage=usage)

    def _stage_prompts(self, plan: PredictionPlan, order: list[int]) -> tuple[list[int], list[Prompt]]:
        """A later cascade stage's prompts for the inputs in ``order`` (indices into ``plan``), without those it
        cannot plan (an empty prompt, the window): they keep their earlier answer, which the client's request
        was fine for."""
        order = list(order)
        while order:
            embeddings = plan.embeddings[order] if plan.embeddings is not None else None
            try:
                return order, self.prompts_for([plan.queries[i] for i in order], embeddings,
                                               [plan.seeds[i] for i in order])
            except UnplannableInputError as exc:
                del order[exc.index]
        return [], []

    async def predict_in_chunks(self, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray | None,
                                scorer: LabelScorer, chunk: int) -> AsyncIterator[tuple[slice, PredictResult]]:
        """Predictions ``chunk`` queries per engine batch, yielded with the slice of ``queries`` they answer.
        Planning runs in a worker thread, so a long job does not hold up the event loop that serves requests."""
        async for part, results in self.calibrated_in_chunks(queries, embeddings, scorer, chunk, {}):
            yield part, results[None]

    async def calibrated_in_chunks(self, queries: Sequence[Mapping[str, str]], embeddings: np.ndarray | None,
                                   scorer: LabelScorer, chunk: int, calibrators: Mapping[str, Calibrator],
                                   ) -> AsyncIterator[tuple[slice, dict[str | None, PredictResult]]]:
        """As ``predict_in_chunks``, with every one of ``calibrators`` also applied to the same scored inputs:
        per chunk, this predictor's result (key None) and each calibrator's (its usage: its calibration prompts,
        scored after the inputs so that they find the demonstrations in the prefix cache). One stage per input:
        the fit and selective annotation score fixed counts, and a cascade's later stages run in ``run``."""
        if self.cascade is not None or self.head is not None or self.hidden is not None:
            raise ValueError("chunked scoring scores label tokens at one stage; run a cascade or a head with run()")
        others = {method: self.with_calibrator(calibrator) for method, calibrator in calibrators.items()}
        for start in range(0, len(queries), chunk):
            part = slice(start, min(start + chunk, len(queries)))
            part_embeddings = embeddings[part] if embeddings is not None else None
            plan = await asyncio.to_thread(self.plan, queries[part], part_embeddings)
            scores = await self.score(plan, scorer)
            results: dict[str | None, PredictResult] = {None: self.calibrate(plan, scores)}
            for method, other in others.items():
                other_plan = await asyncio.to_thread(other.plan_for, plan.prompts)
                extra = [ids for _, ids in other_plan.calibration.prompts]
                scored = await scorer.score(extra, self.continuations()) if extra else []
                results[method] = other.calibrate(other_plan, Scores(scores.inputs, scored))
            yield part, results
