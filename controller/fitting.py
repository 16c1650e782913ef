"""A task's fit as one library call: hold labeled examples back, score them once at every candidate count, and
fit the meta-controller, the calibration and the confidence cascade on that one pass; then say how each did.

The order of the pipeline lives here, not in the server: the server loads a task's examples, runs
``fit_task`` as a job, and stores what it returns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from typing import Any

import numpy as np

from controller.calibration_fit import TaskCalibration, fit_temperature, with_temperature
from controller.cascade import replay
from controller.choice import Choice, choose, fit_options, out_of_fold_calibrated, with_head
from controller.domain import DomainWords
from controller.errors import FitError
from controller.heads import EmbeddingHead, cross_fitted
from controller.hidden_fit import HIDDEN_COUNTS, MAX_EXAMPLES, HiddenFit, HiddenStateReader, fit_hidden_head
from controller.meta import MetaController
from controller.metrics import expected_calibration_error, macro_f1
from controller.near_twins import TwinGroups, cosine_for, twin_components, without_near_twins
from controller.planning import PromptBuilder, renders_empty
from controller.pool import LabeledPool
from controller.retrieval import Selection
from controller.scoring import LabelScorer
from controller.templates import PromptTemplate
from controller.training import (
    MIN_TRAIN_SIZE,
    SERVED_SEED,
    FitSplit,
    TaskFit,
    TrainingData,
    calibrated_distributions,
    collect,
    fit_calibration,
    prompt_costs,
    scored_per_count,
    split_for_fit,
    validate,
)

logger = logging.getLogger(__name__)

# The shares of the progress the held-back pass and the hidden-state head's pass take: the fits after are quick.
_PASS_SHARE = 0.8
_HIDDEN_SHARE = 0.15


def _holdable(n_labeled: int, train_size: int, max_k: int) -> int:
    """At most how many labeled examples a fit holds back at its cheap counts: the demonstrations keep the
    larger part of the pool (a quarter of it may be held back, or ``train_size`` where that is more), and
    the largest count its demonstrations."""
    return max(train_size, min(n_labeled // 4, n_labeled - max_k))


def needed_labeled(candidate_k: Sequence[int]) -> int:
    """Labeled examples a fit over these counts needs: enough to hold back, and the largest count's
    demonstrations besides."""
    return MIN_TRAIN_SIZE + max(candidate_k)


def affordable_counts(candidate_k: Sequence[int], n_labeled: int, max_k: int) -> list[int]:
    """The counts, distinct and ascending, that a task with ``n_labeled`` examples can fit (a small pool cannot
    spare every count's demonstrations) within the limit ``max_k``."""
    return [k for k in sorted(set(candidate_k)) if MIN_TRAIN_SIZE + k <= n_labeled and k <= max_k]


@dataclass(frozen=True)
class FitRequest:
    """What a fit is asked: the counts the cascade chains and the controller chooses among (distinct,
    ascending), how many labeled examples to hold back, the demonstration selection, and the seed."""

    candidate_k: tuple[int, ...]
    train_size: int
    selection: Selection
    seed: int
    default_k: int  # the task's default count (its TaskDefaults'): always one of the options, scored with the rest

    def __post_init__(self) -> None:
        if list(self.candidate_k) != sorted(set(self.candidate_k)) or len(self.candidate_k) < 2:
            raise ValueError("candidate_k must be at least two distinct counts, ascending")


@dataclass(frozen=True)
class TaskExamples:
    """Every example of a task, labeled or not (``labels[i]`` None), with its normalised embedding. The labeled
    ones are held back or serve as demonstrations; every input feeds the strings domain calibration samples."""

    ids: Sequence[str]
    inputs: Sequence[Mapping[str, str]]
    labels: Sequence[str | None]
    embeddings: np.ndarray

    @property
    def labeled(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label is not None]

    def pool(self, rows: Sequence[int]) -> LabeledPool:
        """The demonstration pool made of these (labeled) rows, in their order."""
        rows = list(rows)
        dim = self.embeddings.shape[-1] if self.embeddings.ndim == 2 else 0  # a task without examples has none
        embeddings = self.embeddings[rows] if rows else np.zeros((0, dim), dtype=np.float32)
        return LabeledPool(ids=[self.ids[i] for i in rows], inputs=[self.inputs[i] for i in rows],
                           labels=[self.labels[i] for i in rows],  # type: ignore[misc]
                           embeddings=embeddings)


@dataclass(frozen=True)
class TaskToFit:
    """A task as the fit sees it: its labels, how it renders a prompt, and its examples."""

    labels: Sequence[str]
    verbalizers: Mapping[str, str]
    template: PromptTemplate
    examples: TaskExamples

    def builder(self, pool: LabeledPool, scorer: LabelScorer) -> PromptBuilder:
        return PromptBuilder.for_scorer(self.template, self.verbalizers, pool, scorer)


@dataclass(frozen=True)
class FitCost:
    """What the held-back pass and the hidden-state heads' reading cost the engine, and how long the whole fit
    took."""

    prompt_tokens: int
    calibration_tokens: int
    computed_tokens: int
    seconds: float
    dtype: str | None  # the engine's, where the scorer says
    hidden_tokens: int = 0  # prompt tokens the hidden-state engine read, every count's prompts


@dataclass(frozen=True)
class FitReport:
    """How a fit was made and how its parts did on held-back examples."""

    candidate_k: list[int]
    train_size: int
    held_back: dict[str, int]  # per count, the held-back examples it was scored on (``scored_per_count``)
    selection: str
    seed: int
    validation: dict[str, Any]  # fixed counts, controller, cascade, combined: ``training.validate``'s figures
    choice: dict[str, Any]  # what the default request is served with, its held-back estimate, and why
    near_twins: dict[str, Any]  # held-back examples whose near-twins were left out of their demonstrations
    # The embedding head's cross-fitted figures over every labeled example; None: not fitted.
    embedding_head: dict[str, Any] | None
    # The hidden-state head that serves, with its cross-fitted figures and those of the heads at the other counts
    # (``others``); None: not fitted.
    hidden_head: dict[str, Any] | None
    calibration: dict[str, Any]  # the method chosen per count and every candidate's held-back figures
    cascade: dict[str, Any]  # its stages and thresholds, with its held-back figures
    cost: FitCost
    model: str
    labels: list[str]
    n_labeled: int
    scikit_learn: str = field(default_factory=lambda: version("scikit-learn"))

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON document (the fit summary's own keys; the caller adds where it stored it)."""
        return {
            "candidate_k": self.candidate_k, "train_size": self.train_size, "held_back": self.held_back,
            "selection": self.selection,
            "seed": self.seed, "validation": self.validation, "calibration": self.calibration,
            "cascade": self.cascade, "choice": self.choice, "near_twins": self.near_twins,
            "embedding_head": self.embedding_head, "hidden_head": self.hidden_head,
            "cost": {"prompt_tokens": self.cost.prompt_tokens, "calibration_tokens": self.cost.calibration_tokens,
                     "computed_tokens": self.cost.computed_tokens, "hidden_tokens": self.cost.hidden_tokens,
                     "seconds": self.cost.seconds, "dtype": self.cost.dtype},
            "metadata": {"model": self.model, "labels": self.labels, "scikit_learn": self.scikit_learn,
                         "n_labeled": self.n_labeled},
        }


def _split(task: TaskToFit, request: FitRequest, candidate_k: Sequence[int], train_size: int,
           tokenize: Callable[[str], list[int]]) -> tuple[FitSplit, list[int]]:
    """Which labeled examples are held back, and how many of them each count is scored on
    (``scored_per_count``, from the task's prompt lengths). An empty input under a template with no text
    around it has no prompt at k=0: never held back. CPU work (every labeled example rendered): run in a
    worker thread."""
    examples = task.examples
    labeled = examples.labeled
    inputs = [examples.inputs[row] for row in labeled]
    costs = prompt_costs(task.template, task.verbalizers, tokenize, inputs,
                         [examples.labels[row] for row in labeled], candidate_k, seed=request.seed)  # type: ignore[misc]
    scored = scored_per_count(costs, candidate_k, request.default_k, train_size,
                              _holdable(len(labeled), train_size, candidate_k[-1]))
    empty = [i for i, query in enumerate(inputs) if renders_empty(task.template, tokenize, query)]
    split = split_for_fit(len(labeled), request.selection, candidate_k, max(scored), request.seed, empty)
    if empty and len(split.held) < MIN_TRAIN_SIZE:
        raise FitError(f"only {len(split.held)} labeled examples can be held back, fewer than {MIN_TRAIN_SIZE}: "
                       f"{len(empty)} have an empty input, which without demonstrations makes an empty prompt")
    if len(split.held) < max(scored):  # fewer could be held back (a shared set, empty inputs): spend on those
        scored = scored_per_count(costs, candidate_k, request.default_k, min(train_size, len(split.held)),
                                  len(split.held))
    return split, scored


def _choose(data: TrainingData, calibration: TaskCalibration, calibrated: np.ndarray, candidate_k: Sequence[int],
            request: FitRequest, n_labels: int, head: np.ndarray | None, head_gold: np.ndarray | None,
            hidden: Sequence[HiddenFit]) -> Choice:
    """What the default request is served with: the family of options judged out of fold, and the choice rule
    (``controller.choice``). The heads are judged on every labeled example they read (cross-fitted; ``head``
    and ``head_gold``, the held-back ones first, and the hidden-state head's leading part of that order), so
    that they pair with the counts on those."""
    judged = out_of_fold_calibrated(data, calibration, candidate_k, n_labels, request.seed)
    options = fit_options(data, calibrated, judged, candidate_k, request.default_k, n_labels, request.seed, head,
                          [(one.name, one.cross_fitted, one.prompt_tokens) for one in hidden])
    return choose(options, data.gold if head_gold is None else head_gold, n_labels, request.seed)


@dataclass(frozen=True)
class _HeadFit:
    """The embedding head fitted on every labeled example, its cross-fitted distributions of each, and the
    pool's near-twin groups (which the cross-fitting keeps in one fold)."""

    head: EmbeddingHead | None  # None: a pool the head cannot be cross-fitted on (one group, one label)
    cross_fitted: np.ndarray | None  # (n_labeled, L), in the order of ``TaskExamples.labeled``
    gold: np.ndarray  # (n_labeled,) label indices, in that order
    groups: TwinGroups
    components: np.ndarray  # (n_labeled,) each example's near-twin group

    def order(self, held: Sequence[int], last: Collection[int] = ()) -> list[int]:
        """Every labeled example (indices into the labeled examples): the held-back ones (``held``) first, the
        ones in ``last`` last (those the hidden-state head cannot read, so that what it read is a prefix)."""
        chosen, at_end = set(held), set(last)
        rest = [i for i in range(len(self.gold)) if i not in chosen]
        return [*held, *(i for i in rest if i not in at_end), *(i for i in rest if i in at_end)]

    def describe(self, n_labels: int) -> dict[str, Any] | None:
        if self.head is None or self.cross_fitted is None:
            return None
        return {"examples": len(self.gold), "temperature": round(self.head.temperature, 4),
                "macro_f1": round(macro_f1(self.gold, self.cross_fitted.argmax(axis=1), n_labels), 4),
                "ece": round(expected_calibration_error(self.cross_fitted, self.gold), 4)}

    def in_order(self, order: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The cross-fitted distributions and gold labels of every labeled example in ``order``; (None, None)
        without a head."""
        if self.cross_fitted is None:
            return None, None
        return self.cross_fitted[list(order)], self.gold[list(order)]


def _fit_head(task: TaskToFit, cosine: float, seed: int) -> _HeadFit:
    """CPU work (every pair of labeled examples compared, a handful of linear fits): run in a worker thread."""
    examples = task.examples
    labeled = examples.labeled
    embeddings = examples.embeddings[labeled]
    components, by_cosine = twin_components(embeddings, [examples.inputs[i] for i in labeled], cosine)
    groups = TwinGroups.of(components, by_cosine)
    gold = np.array([list(task.labels).index(examples.labels[i]) for i in labeled])  # type: ignore[arg-type]
    if len(np.unique(components)) < 2 or len(np.unique(gold)) < 2:
        return _HeadFit(None, None, gold, groups, components)
    # Tempered on its cross-fitted answers, as the hidden-state head is: balanced class weights and C = 1 leave
    # a logistic regression's probabilities far from confidences (ECE 0.13 on the shared datasets' test splits).
    raw = cross_fitted(embeddings, gold, len(task.labels), components, seed)
    temperature = fit_temperature(raw, gold)
    head = replace(EmbeddingHead.fit(embeddings, gold, len(task.labels)), temperature=temperature)
    return _HeadFit(head, with_temperature(raw, temperature), gold, groups, components)


def _unreadable(task: TaskToFit, scorer: LabelScorer, order: Sequence[int]) -> set[int]:
    """The labeled examples (indices into them) the hidden-state heads cannot read, among the first of ``order``
    until ``MAX_EXAMPLES`` readable ones are found (a large pool is not tokenized whole): an input that alone
    makes an empty prompt (under a template with no text around it) or a prompt longer than the window. CPU
    work."""
    examples = task.examples
    builder = task.builder(examples.pool([]), scorer)
    out: set[int] = set()
    readable = 0
    for i in order:
        if readable >= MAX_EXAMPLES:
            break
        query = examples.inputs[examples.labeled[i]]
        if builder.renders_empty(query) or builder.zero_shot_tokens(query) > builder.max_prompt_tokens:
            out.add(i)
        else:
            readable += 1
    return out


async def _fit_hidden(task: TaskToFit, heads: _HeadFit, order: Sequence[int], scorer: Any, seed: int,
                      progress: Callable[[float], None]) -> list[HiddenFit]:
    """The hidden-state heads, one per count of ``HIDDEN_COUNTS``, on up to ``MAX_EXAMPLES`` labeled examples
    in ``order`` (the held-back ones first, the order their evidence pairs with the counts' in; only examples it
    can read); none where the embedding head could not be cross-fitted either, where what they read cannot be
    (one near-twin group), or where reading fails (the engine): an optional head never fails the fit."""
    if heads.head is None or not order:
        return []
    try:
        return await _read_and_fit(task, heads, list(order)[:MAX_EXAMPLES], scorer, seed, progress)
    except Exception:
        logger.exception("the hidden-state heads could not be fitted; the fit goes on without them")
        return []


async def _read_and_fit(task: TaskToFit, heads: _HeadFit, order: list[int], scorer: Any, seed: int,
                        progress: Callable[[float], None]) -> list[HiddenFit]:
    examples = task.examples
    rows = [examples.labeled[i] for i in order]
    components = heads.components[order]
    if len(np.unique(components)) < 2:
        return []
    builder = task.builder(examples.pool(rows), scorer)
    fitted = []
    for j, count in enumerate(HIDDEN_COUNTS):
        fitted.append(await fit_hidden_head(
            builder, [examples.inputs[r] for r in rows], examples.embeddings[rows], heads.gold[order], components,
            len(task.labels), scorer, seed, count, lambda f, j=j: progress((j + f) / len(HIDDEN_COUNTS))))
    return fitted


def _served_hidden(hidden: Sequence[HiddenFit], choice: Choice, n_labels: int) -> HiddenFit | None:
    """The hidden-state head that serves: the one the choice took, else (for ``decision: "hidden"``) the one of
    the best cross-fitted macro-F1, the cheaper on a tie."""
    chosen = next((one for one in hidden if one.name == choice.option.name), None)
    if chosen is not None or not hidden:
        return chosen
    return max(hidden, key=lambda one: (round(one.macro_f1(n_labels), 9), -float(np.mean(one.prompt_tokens))))


def _describe_hidden(hidden: Sequence[HiddenFit], served: HiddenFit | None, n_labels: int) -> dict[str, Any] | None:
    if served is None:
        return None
    return {**served.describe(n_labels), "others": [one.describe(n_labels) for one in hidden if one is not served]}


async def fit_task(task: TaskToFit, request: FitRequest, scorer: LabelScorer,
                   progress: Callable[[float], None] = lambda _: None) -> tuple[TaskFit, FitReport]:
    """Fit the task: hold back up to ``request.train_size`` labeled examples (fewer where the largest count's
    demonstrations must be left), score them once at every candidate count, fit the meta-controller, the
    calibration per count and the confidence cascade on that pass, and validate the three on a split of it.
    Raises FitError when the task cannot be fitted (too few labeled examples to hold back)."""
    began = time.perf_counter()
    examples = task.examples
    labeled = examples.labeled
    # The unfitted default is always weighed, where the pool can spare its demonstrations.
    with_default = sorted({*request.candidate_k, request.default_k})
    candidate_k = with_default if needed_labeled(with_default) <= len(labeled) else list(request.candidate_k)
    if len(labeled) < needed_labeled(candidate_k):
        raise FitError(f"a fit over counts {candidate_k} needs at least {needed_labeled(candidate_k)} labeled "
                       f"examples; the task has {len(labeled)}")
    train_size = min(request.train_size, len(labeled) - candidate_k[-1])
    split, scored = await asyncio.to_thread(_split, task, request, candidate_k, train_size, scorer.tokenize)
    held = [labeled[i] for i in split.held]
    pool_rows, with_twins = [labeled[i] for i in split.pool], 0
    twin_cosine = cosine_for(task.template.fields)
    if not split.served:  # per-input sets: no held-back example may draw its own near-twin
        pool_rows, with_twins = without_near_twins(examples.embeddings, held, pool_rows, candidate_k[-1],
                                                   twin_cosine, examples.inputs)
    pool = examples.pool(pool_rows)
    data = await collect(task.builder(pool, scorer), [examples.inputs[i] for i in held], examples.embeddings[held],
                         [examples.labels[i] for i in held], task.labels,  # type: ignore[misc]
                         candidate_k, request.selection, SERVED_SEED if split.served else request.seed, scorer,
                         lambda f: progress(_PASS_SHARE * f),
                         words=DomainWords.from_inputs(examples.inputs, task.template.fields), scored=scored)
    complete = data.complete()  # the examples scored at every count: what compares counts per example
    controller = MetaController(candidate_k=tuple(candidate_k)).fit(complete.features, complete.correct)
    served = {k: [pool.ids[r] for r in rows] for k, rows in split.served.items()}
    calibration = await asyncio.to_thread(fit_calibration, data, request.selection, candidate_k, len(task.labels),
                                          request.seed, served)
    calibrated = calibrated_distributions(data, calibration, candidate_k)
    heads = await asyncio.to_thread(_fit_head, task, twin_cosine, request.seed)
    reads_hidden = isinstance(scorer, HiddenStateReader)  # an engine that reads hidden states
    unreadable = (await asyncio.to_thread(_unreadable, task, scorer, heads.order(split.held)) if reads_hidden
                  else set())
    order = heads.order(split.held, unreadable)
    head_probs, head_gold = heads.in_order(order)
    head_held = head_probs[:len(split.held)] if head_probs is not None else None
    # What the hidden-state heads read: a prefix of that order (none where a held-back example is unreadable).
    readable = [] if unreadable & set(split.held) else order[:len(order) - len(unreadable)]
    hidden = (await _fit_hidden(task, heads, readable, scorer, request.seed,
                                lambda f: progress(_PASS_SHARE + _HIDDEN_SHARE * f)) if reads_hidden else [])
    choice = await asyncio.to_thread(_choose, data, calibration, calibrated, candidate_k, request, len(task.labels),
                                     head_probs, head_gold, hidden)
    cascade = choice.option.cascade
    served_hidden = _served_hidden(hidden, choice, len(task.labels))
    calibrated_complete = calibrated[:len(complete.gold)]
    figures = await asyncio.to_thread(validate, complete, candidate_k, request.seed, 1.0, calibrated_complete)
    fit = TaskFit(controller=controller, calibration=calibration, model=scorer.model_name, cascade=cascade,
                  head=heads.head, hidden=served_hidden.head if served_hidden is not None else None)
    replayed = with_head(head_held, calibrated_complete, complete.prompt_tokens, candidate_k)
    cost = FitCost(prompt_tokens=data.engine_tokens["prompt_tokens"],
                   calibration_tokens=data.engine_tokens["calibration_tokens"],
                   computed_tokens=data.engine_tokens["computed_tokens"],
                   seconds=round(time.perf_counter() - began, 1), dtype=getattr(scorer, "dtype", None),
                   hidden_tokens=int(sum(one.prompt_tokens.sum() for one in hidden)))
    report = FitReport(candidate_k=candidate_k, train_size=train_size, held_back={
                           str(k): data.n_scored(j) for j, k in enumerate(candidate_k)}, selection=request.selection,
                       seed=request.seed, validation=figures, calibration=calibration.describe(),
                       cascade={**cascade.describe(),
                                "held_back": (served_hidden.figures(len(complete.gold), len(task.labels))
                                              if cascade.hidden and served_hidden is not None else
                                              replay(cascade, *replayed).figures(complete.gold, len(task.labels)))},
                       choice=choice.describe(),
                       near_twins={"cosine": twin_cosine, "held_back_with_twins": with_twins,
                                   "pool_rows_left_out": len(split.pool) - len(pool_rows),
                                   "pool_groups": heads.groups.describe()},
                       embedding_head=heads.describe(len(task.labels)),
                       hidden_head=_describe_hidden(hidden, served_hidden, len(task.labels)),
                       cost=cost, model=scorer.model_name, labels=list(task.labels),
                       n_labeled=len(labeled))
    return fit, report
