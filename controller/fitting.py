"""A task's fit as one library call: hold labeled examples back, score them once at every candidate count, and
fit the meta-controller, the calibration and the confidence cascade on that one pass; then say how each did.

The order of the pipeline lives here, not in the server: the server loads a task's examples, runs
``fit_task`` as a job, and stores what it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np

from controller.calibration_fit import TaskCalibration
from controller.cascade import replay
from controller.choice import Choice, choose, fit_options, out_of_fold_calibrated
from controller.domain import DomainWords
from controller.errors import FitError
from controller.meta import MetaController
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
    split_for_fit,
    validate,
)

# The share of the progress the held-back pass takes: the fits after it are quick.
_PASS_SHARE = 0.95
# Embedding cosine above which two examples are near-twins (the same text copied or re-punctuated, the same
# story from another wire), measured by bench/near_twins.py on the shared datasets: from 0.95 up, pairs'
# labels disagree about as often as exact copies'. Inputs of several fields (a premise and a hypothesis) embed
# as one text that the longest field dominates: there only copies count.
NEAR_TWIN_COSINE = 0.95
NEAR_TWIN_COSINE_FIELDS = 0.999


def _text_key(query: Mapping[str, str]) -> str:
    """An input's text lower-cased with all but letters and digits dropped: punctuation alone pushes short
    copies ("Here she is" ~ "Here she is......") below the cosine threshold."""
    return "\x1f".join("".join(c for c in value.lower() if c.isalnum()) for value in query.values())


def without_near_twins(embeddings: np.ndarray, held: Sequence[int], pool: Sequence[int], keep: int,
                       cosine: float = NEAR_TWIN_COSINE,
                       inputs: Sequence[Mapping[str, str]] | None = None) -> tuple[list[int], int]:
    """The pool rows that are no held-back example's near-twin (cosine above ``cosine``, or, given ``inputs``,
    the same normalised text), and how many held-back examples had one. kNN would retrieve a held-back
    example's own copy as its demonstration and flatter the fit's estimate; at least ``keep`` rows stay (the
    largest count's demonstrations), the least similar first."""
    if not len(held) or not len(pool):
        return list(pool), 0
    similarity = np.asarray(embeddings[list(pool)] @ embeddings[list(held)].T)  # (pool, held)
    twins = similarity > cosine
    if inputs is not None:
        held_keys = [_text_key(inputs[h]) for h in held]
        for i, row in enumerate(pool):
            key = _text_key(inputs[row])
            if key.strip("\x1f"):  # empty (or emoji-only) texts all share a key: no evidence of a copy
                twins[i] |= np.array([key == other for other in held_keys])
    nearest = np.where(twins, 2.0, similarity).max(axis=1)
    kept = [row for row, twin in zip(pool, twins.any(axis=1), strict=True) if not twin]
    if len(kept) < keep:  # a pool of copies: keep the least similar of them
        chosen = sorted(np.argsort(nearest, kind="stable")[:keep])
        kept = [pool[i] for i in chosen]
        twins[chosen] = False  # kept after all: their held-back twins still draw them
    return kept, int(twins.any(axis=0).sum())


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
    """What the held-back pass cost the engine, and how long the whole fit took."""

    prompt_tokens: int
    calibration_tokens: int
    computed_tokens: int
    seconds: float
    dtype: str | None  # the engine's, where the scorer says


@dataclass(frozen=True)
class FitReport:
    """How a fit was made and how its parts did on held-back examples."""

    candidate_k: list[int]
    train_size: int
    selection: str
    seed: int
    validation: dict[str, Any]  # fixed counts, controller, cascade, combined: ``training.validate``'s figures
    choice: dict[str, Any]  # what the default request is served with, its held-back estimate, and why
    near_twins: dict[str, Any]  # held-back examples whose near-twins were left out of their demonstrations
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
            "candidate_k": self.candidate_k, "train_size": self.train_size, "selection": self.selection,
            "seed": self.seed, "validation": self.validation, "calibration": self.calibration,
            "cascade": self.cascade, "choice": self.choice, "near_twins": self.near_twins,
            "cost": {"prompt_tokens": self.cost.prompt_tokens, "calibration_tokens": self.cost.calibration_tokens,
                     "computed_tokens": self.cost.computed_tokens, "seconds": self.cost.seconds,
                     "dtype": self.cost.dtype},
            "metadata": {"model": self.model, "labels": self.labels, "scikit_learn": self.scikit_learn,
                         "n_labeled": self.n_labeled},
        }


def _split(task: TaskToFit, request: FitRequest, candidate_k: Sequence[int], train_size: int,
           tokenize: Callable[[str], list[int]]) -> FitSplit:
    """Which labeled examples are held back. An empty input under a template with no text around it has no
    prompt at k=0: never held back. CPU work (every labeled example rendered): run in a worker thread."""
    examples = task.examples
    labeled = examples.labeled
    empty = [i for i, row in enumerate(labeled) if renders_empty(task.template, tokenize, examples.inputs[row])]
    split = split_for_fit(len(labeled), request.selection, candidate_k, train_size, request.seed, empty)
    if empty and len(split.held) < MIN_TRAIN_SIZE:
        raise FitError(f"only {len(split.held)} labeled examples can be held back, fewer than {MIN_TRAIN_SIZE}: "
                       f"{len(empty)} have an empty input, which without demonstrations makes an empty prompt")
    return split


def _choose(data: TrainingData, calibration: TaskCalibration, calibrated: np.ndarray, candidate_k: Sequence[int],
            request: FitRequest, n_labels: int) -> Choice:
    """What the default request is served with: the family of options judged out of fold, and the choice rule
    (``controller.choice``)."""
    judged = out_of_fold_calibrated(data, calibration, candidate_k, n_labels, request.seed)
    options = fit_options(data, calibrated, judged, candidate_k, request.default_k, n_labels, request.seed)
    return choose(options, data.gold, n_labels, request.seed)


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
    split = await asyncio.to_thread(_split, task, request, candidate_k, train_size, scorer.tokenize)
    held = [labeled[i] for i in split.held]
    pool_rows, with_twins = [labeled[i] for i in split.pool], 0
    twin_cosine = NEAR_TWIN_COSINE if len(task.template.fields) == 1 else NEAR_TWIN_COSINE_FIELDS
    if not split.served:  # per-input sets: no held-back example may draw its own near-twin
        pool_rows, with_twins = without_near_twins(examples.embeddings, held, pool_rows, candidate_k[-1],
                                                   twin_cosine, examples.inputs)
    pool = examples.pool(pool_rows)
    data = await collect(task.builder(pool, scorer), [examples.inputs[i] for i in held], examples.embeddings[held],
                         [examples.labels[i] for i in held], task.labels,  # type: ignore[misc]
                         candidate_k, request.selection, SERVED_SEED if split.served else request.seed, scorer,
                         lambda f: progress(_PASS_SHARE * f),
                         words=DomainWords.from_inputs(examples.inputs, task.template.fields))
    controller = MetaController(candidate_k=tuple(candidate_k)).fit(data.features, data.correct)
    served = {k: [pool.ids[r] for r in rows] for k, rows in split.served.items()}
    calibration = await asyncio.to_thread(fit_calibration, data, request.selection, candidate_k, len(task.labels),
                                          request.seed, served)
    calibrated = calibrated_distributions(data, calibration, candidate_k)
    choice = await asyncio.to_thread(_choose, data, calibration, calibrated, candidate_k, request, len(task.labels))
    cascade = choice.option.cascade
    figures = await asyncio.to_thread(validate, data, candidate_k, request.seed, 1.0, calibrated)
    fit = TaskFit(controller=controller, calibration=calibration, model=scorer.model_name, cascade=cascade)
    cost = FitCost(prompt_tokens=data.engine_tokens["prompt_tokens"],
                   calibration_tokens=data.engine_tokens["calibration_tokens"],
                   computed_tokens=data.engine_tokens["computed_tokens"],
                   seconds=round(time.perf_counter() - began, 1), dtype=getattr(scorer, "dtype", None))
    report = FitReport(candidate_k=candidate_k, train_size=train_size, selection=request.selection,
                       seed=request.seed, validation=figures, calibration=calibration.describe(),
                       cascade={**cascade.describe(),
                                "held_back": replay(cascade, calibrated, data.prompt_tokens, candidate_k).figures(
                                    data.gold, len(task.labels))},
                       choice=choice.describe(),
                       near_twins={"cosine": twin_cosine, "held_back_with_twins": with_twins,
                                   "pool_rows_left_out": len(split.pool) - len(pool_rows)},
                       cost=cost, model=scorer.model_name, labels=list(task.labels),
                       n_labeled=len(labeled))
    return fit, report
