"""A task's fit: training data and validation figures for the meta-controller, and the task's calibration.

Held-back labeled examples are classified at every candidate count, with demonstrations retrieved from the
rest of the pool; whether each answer was right is the controller's target, and the label distributions are
what the task's calibration is fitted on (``controller.calibration_fit``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from controller.allocator import smallest_sufficient
from controller.calibration import Calibrator, ContextualCalibrator, DomainCalibrator
from controller.calibration_fit import TaskCalibration, fit_task_calibration
from controller.cascade import Cascade, fit_cascade, replay
from controller.domain import DEFAULT_DOMAIN, DomainWords
from controller.features import features_for
from controller.heads import EmbeddingHead
from controller.hidden_fit import HiddenHead
from controller.meta import MetaController
from controller.metrics import macro_f1
from controller.planning import PromptBuilder
from controller.predictor import Predictor, PredictResult
from controller.retrieval import Selection, retriever_for
from controller.scoring import LabelScorer
from controller.templates import Demo, PromptTemplate

MIN_TRAIN_SIZE = 20
VALIDATION_SHARE = 0.2
# The share of ``train_size`` the counts above the task's default count are scored on; what that saves buys
# more examples at the default count and below.
DEAR_SHARE = 0.5


def scored_per_count(costs: Sequence[float], candidate_k: Sequence[int], default_k: int, train_size: int,
                     available: int) -> list[int]:
    """How many held-back examples each count is scored on, at no more engine work than scoring ``train_size``
    at every count; ``costs``: each count's prompt tokens per example (an estimate).

    Evidence is bought where it is cheap and where the fit's choice needs it. The choice compares the default
    count with cheaper options and asks a cheaper one to show it loses little: a close comparison that needs
    many examples, and those counts cost a tenth of the largest. A count above the default must show it is
    significantly better: a larger difference, seen on fewer examples. So the default count and those below it
    get every example the budget allows (at most ``available``), the larger ones ``DEAR_SHARE`` of
    ``train_size``. Each count's examples are the leading ones of the held-back order, so any two counts are
    compared on the examples both were scored on."""
    counts = [int(k) for k in candidate_k]
    budget = train_size * float(sum(costs))
    cheap = float(sum(c for k, c in zip(counts, costs, strict=True) if k <= default_k))
    dear = float(sum(costs)) - cheap
    if cheap <= 0 or dear <= 0:
        return [min(train_size, available)] * len(counts)
    n_dear = max(MIN_TRAIN_SIZE, int(train_size * DEAR_SHARE))
    n_cheap = min(available, max(train_size, int((budget - n_dear * dear) // cheap)))
    n_dear = min(n_cheap, int((budget - n_cheap * cheap) // dear))  # what a smaller ``available`` leaves goes back
    return [n_cheap if k <= default_k else n_dear for k in counts]


def prompt_costs(template: PromptTemplate, verbalizers: Mapping[str, str], tokenize: Callable[[str], list[int]],
                 inputs: Sequence[Mapping[str, str]], labels: Sequence[str], candidate_k: Sequence[int],
                 sample: int = 64, seed: int = 0) -> list[float]:
    """Each count's prompt tokens per example, estimated from a sample of the labeled examples: the zero-shot
    prompt plus k demonstrations of the mean demonstration's length."""
    if not inputs:
        return [float(k + 1) for k in candidate_k]
    rows = np.random.default_rng(seed).permutation(len(inputs))[:sample]
    zero = float(np.mean([len(tokenize(template.build_prompt([], inputs[i]))) for i in rows]))
    demos = [template.separator + template.render_demo(Demo(inputs[i], verbalizers[labels[i]])) for i in rows]
    demo = float(np.mean([len(tokenize(text)) for text in demos]))
    return [max(zero, 1.0) + k * max(demo, 1.0) for k in candidate_k]


@dataclass(frozen=True)
class TrainingData:
    features: np.ndarray  # (n, n_features)
    correct: np.ndarray  # (n, K): 1 where the model was right with candidate_k[j] demonstrations
    prompt_tokens: np.ndarray  # (n, K)
    distributions: np.ndarray  # (n, K, n_labels): uncalibrated label distributions
    gold: np.ndarray  # (n,): index of each held-back example's label
    # per prompt method ("contextual", "domain"): (n, K, n_labels) calibrated by it, where serving it is cheap
    # (a shared demonstration set); else empty
    prompted: dict[str, np.ndarray]
    engine_tokens: dict[str, int]  # what the pass cost: prompt, calibration and computed tokens
    # Per count, how many of the leading held-back examples it was scored on (``scored_per_count``); the rows
    # after them hold a uniform distribution and no tokens. Empty: every count scored every example.
    scored: tuple[int, ...] = ()

    def n_scored(self, j: int) -> int:
        """How many leading held-back examples the j-th count was scored on."""
        return self.scored[j] if self.scored else len(self.gold)

    def complete(self) -> TrainingData:
        """The examples every count was scored on: what compares counts example by example."""
        if not self.scored or min(self.scored) == len(self.gold):
            return self
        n = min(self.scored)
        return TrainingData(features=self.features[:n], correct=self.correct[:n], prompt_tokens=self.prompt_tokens[:n],
                            distributions=self.distributions[:n], gold=self.gold[:n],
                            prompted={m: d[:n] for m, d in self.prompted.items()}, engine_tokens=self.engine_tokens)


# The request seed of a default request: where every input shares one set, the fit is made under the set
# this seed serves.
SERVED_SEED = 0


@dataclass(frozen=True)
class FitSplit:
    """Which labeled examples a fit holds back and which its demonstrations come from (indices into the
    task's labeled pool, in the order the serving pool has them)."""

    held: list[int]
    pool: list[int]
    # Where every input shares one set: per count, the set a default request is served with (indices into the
    # labeled pool, which is then ``pool`` whole). Empty otherwise.
    served: dict[int, list[int]]


def split_for_fit(n_labeled: int, selection: Selection, candidate_k: Sequence[int], train_size: int,
                  seed: int, never_held: Collection[int] = ()) -> FitSplit:
    """Per-input sets (kNN, diverse): ``train_size`` examples held back at random, demonstrations from the
    rest. One shared set (random): what is served is one set of the whole pool, so the fit scores held-back
    examples under exactly that set, per count, and holds back only examples outside it: its calibration is
    that set's, and the controller learns how that set does. ``never_held``: examples that cannot be scored
    at every count (an empty prompt without demonstrations); they may still be demonstrations."""
    retriever = retriever_for(selection)
    order = [int(i) for i in np.random.default_rng(seed).permutation(n_labeled)]
    excluded = set(never_held)
    if not retriever.shares_one_set:
        held = [i for i in order if i not in excluded][:train_size]
        chosen = set(held)
        return FitSplit(held=held, pool=[i for i in order if i not in chosen], served={})
    served = {int(k): retriever.shared_set(n_labeled, int(k), SERVED_SEED) for k in candidate_k}
    members = {row for rows in served.values() for row in rows}
    return FitSplit(held=[i for i in order if i not in members and i not in excluded][:train_size],
                    pool=list(range(n_labeled)), served=served)


@dataclass(frozen=True)
class TaskFit:
    """What a task's fit job stores: the meta-controller, the task's calibration, and the model both were
    fitted with."""

    controller: MetaController
    calibration: TaskCalibration | None
    model: str
    cascade: Cascade | None = None  # None: fitted before fits had one
    head: EmbeddingHead | None = None  # the embedding head (None: fitted before fits had one, or a pool of one label)
    # The hidden-state head (None: fitted before fits had one, or by an engine that reads no hidden states).
    hidden: HiddenHead | None = None


class _PassRecord:
    """What the held-back pass gathers, filled chunk by chunk and count by count."""

    def __init__(self, n: int, n_k: int, labels: Sequence[str], methods: Collection[str]) -> None:
        self.labels = list(labels)
        self.correct = np.zeros((n, n_k), dtype=np.int64)
        self.tokens = np.zeros((n, n_k), dtype=np.int64)
        # Uniform until scored: a count scored on fewer examples leaves the rest a distribution that every
        # calibration map can read.
        self.distributions = np.full((n, n_k, len(labels)), 1 / len(labels))
        self.prompted = {method: np.full((n, n_k, len(labels)), 1 / len(labels)) for method in methods}
        self.cost = {"prompt_tokens": 0, "calibration_tokens": 0, "computed_tokens": 0}

    def add(self, part: slice, j: int, results: Mapping[str | None, PredictResult], gold: Sequence[str]) -> None:
        """One chunk's answers at the j-th count: uncalibrated (``None``) and per prompt method."""
        uncalibrated = results[None]
        predictions = uncalibrated.predictions
        self.correct[part, j] = [p.label == g for p, g in zip(predictions, gold, strict=True)]
        self.tokens[part, j] = [p.prompt_tokens for p in predictions]
        self.distributions[part, j] = [[p.uncalibrated_probs[label] for label in self.labels] for p in predictions]
        self.cost["prompt_tokens"] += uncalibrated.usage.prompt_tokens
        self.cost["computed_tokens"] += uncalibrated.usage.total_tokens - uncalibrated.usage.cached_tokens
        for method, result in results.items():
            if method is None:
                continue
            self.prompted[method][part, j] = [[p.probs[label] for label in self.labels] for p in result.predictions]
            self.cost["calibration_tokens"] += result.usage.calibration_tokens
            self.cost["computed_tokens"] += result.usage.calibration_tokens


def _prompt_calibrators(selection: Selection, words: DomainWords | None) -> dict[str, Calibrator]:
    """The prompt methods a fit weighs: only where every input shares a set, which makes them cheap to serve."""
    if not retriever_for(selection).shares_one_set:
        return {}
    calibrators: dict[str, Calibrator] = {"contextual": ContextualCalibrator()}
    if words is not None and not words.empty:
        calibrators["domain"] = DomainCalibrator(DEFAULT_DOMAIN, words)
    return calibrators


async def collect(
    builder: PromptBuilder,
    queries: Sequence[dict[str, str]],
    embeddings: np.ndarray,
    gold: Sequence[str],
    labels: Sequence[str],
    candidate_k: Sequence[int],
    selection: Selection,
    seed: int,
    scorer: LabelScorer,
    progress: Callable[[float], None] = lambda _: None,
    chunk: int = 32,
    words: DomainWords | None = None,
    scored: Sequence[int] | None = None,
) -> TrainingData:
    """Run the model at every candidate count on the held-back queries, uncalibrated (as served with
    ``calibration: none``; calibration rarely changes which counts are right), demonstrations retrieved by
    ``selection`` under ``seed`` from ``builder``'s pool (``split_for_fit`` says which pool and seed).

    Where every input shares a set (random), contextual and domain calibration cost once per set at serving
    time, so they are candidates of the task's calibration: the same pass also estimates the set's bias from
    content-free inputs and, with ``words``, from random in-domain strings (the extra prompts count in
    ``engine_tokens``). Elsewhere no extra prompt is spent.

    ``scored``: per count, how many of the leading queries it is scored on (``scored_per_count``); None:
    every query at every count."""
    counts = [len(queries)] * len(candidate_k) if scored is None else [min(int(n), len(queries)) for n in scored]
    calibrators = _prompt_calibrators(selection, words)
    record = _PassRecord(len(queries), len(candidate_k), labels, calibrators)
    steps, done = sum((n + chunk - 1) // chunk for n in counts), 0
    for j, k in enumerate(candidate_k):
        predictor = Predictor.uncalibrated(builder, labels, selection, k, seed)
        n = counts[j]
        async for part, results in predictor.calibrated_in_chunks(queries[:n], embeddings[:n], scorer, chunk,
                                                                  calibrators):
            record.add(part, j, results, gold[part])
            done += 1
            progress(done / max(1, steps))
    return TrainingData(features=features_for(builder, labels, queries, embeddings), correct=record.correct,
                        prompt_tokens=record.tokens, distributions=record.distributions,
                        gold=np.array([list(labels).index(g) for g in gold]), prompted=record.prompted,
                        engine_tokens=record.cost,
                        scored=() if scored is None else tuple(counts))


def fit_calibration(data: TrainingData, selection: str, candidate_k: Sequence[int], n_labels: int,
                    seed: int, served: Mapping[int, Sequence[str]] | None = None) -> TaskCalibration:
    """The task's calibration for this selection, per candidate count, from the same held-back pass;
    ``served``: the ids of each count's shared set, where the held-back examples were scored under one."""
    return fit_task_calibration(selection, candidate_k, data.distributions, data.gold, n_labels, seed,
                                data.prompted, served, [data.n_scored(j) for j in range(len(candidate_k))])


def calibrated_distributions(data: TrainingData, calibration: TaskCalibration,
                             candidate_k: Sequence[int]) -> np.ndarray:
    """(n, K, L): the held-back distributions as ``calibration: "auto"`` serves them, count by count (the fitted
    maps are applied to the examples they were fitted on: a little optimistic where the map is affine)."""
    out = np.empty_like(data.distributions)
    for j, k in enumerate(candidate_k):
        chosen = calibration.counts[int(k)]
        out[:, j] = chosen.apply(data.prompted.get(chosen.method, data.distributions)[:, j])
    return out


def _figures(answers: np.ndarray, gold: np.ndarray, tokens: np.ndarray, n_labels: int,
             chosen_k: np.ndarray | None = None) -> dict[str, float]:
    figures = {"accuracy": float((answers == gold).mean()), "macro_f1": macro_f1(gold, answers, n_labels),
               "mean_prompt_tokens": float(tokens.mean())}
    return figures if chosen_k is None else {**figures, "mean_k": float(chosen_k.mean())}


def _combined(cascade: Cascade, controller: MetaController, features: np.ndarray, probs: np.ndarray,
              tokens: np.ndarray, candidate_k: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cascade's first stage, then the meta-controller's count (among the larger ones) for the inputs the
    cascade would send on: answers, prompt tokens over both stages, and the answering count."""
    counts = np.asarray(candidate_k)
    first = int(np.flatnonzero(counts == cascade.stages[0])[0])
    answers, spent = probs[:, first].argmax(axis=1), tokens[:, first].astype(np.float64)
    chosen = np.full(len(probs), counts[first])
    later = np.flatnonzero(counts > counts[first])
    goes_on = cascade.goes_on(0, probs[:, first]) if len(later) else np.zeros(len(probs), dtype=bool)
    if goes_on.any():
        expected = controller.predict_proba(features[goes_on])[:, later]
        reference = int(np.argmax(controller.train_accuracy_[later]))
        pick = later[smallest_sufficient(expected, tokens[goes_on][:, later], controller.tolerance, reference)]
        rows = np.flatnonzero(goes_on)
        answers[rows] = probs[rows, pick].argmax(axis=1)
        spent[rows] += tokens[rows, pick]
        chosen[rows] = counts[pick]
    return answers, spent, chosen


def validate(data: TrainingData, candidate_k: Sequence[int], seed: int, C: float = 1.0,
             calibrated: np.ndarray | None = None) -> dict:
    """Fit on 80% of the held-back examples and report, on the other 20%, accuracy and prompt tokens at each
    fixed count and with the controller choosing per input; with the ``calibrated`` distributions, answers
    are those (as ``calibration: "auto"`` serves them), and the confidence cascade and the cascade's first
    stage followed by the controller's choice ("combined") are reported too."""
    n = len(data.correct)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * VALIDATION_SHARE)))
    val, train = order[:n_val], order[n_val:]
    controller = MetaController(candidate_k=tuple(candidate_k), C=C).fit(data.features[train], data.correct[train])
    chosen = controller.choose(controller.predict_proba(data.features[val]), data.prompt_tokens[val])
    rows = np.arange(len(val))
    n_labels = data.distributions.shape[2]
    gold = data.gold[val]
    answers = (calibrated if calibrated is not None else data.distributions)[val].argmax(axis=2)  # (n_val, K)
    tokens = data.prompt_tokens[val]
    fixed = [{"k": int(k), **_figures(answers[:, j], gold, tokens[:, j], n_labels)}
             for j, k in enumerate(candidate_k)]
    figures: dict = {
        "n_train": int(len(train)),
        "n_validation": int(len(val)),
        "calibrated": calibrated is not None,
        "fixed": fixed,
        "controller": _figures(answers[rows, chosen], gold, tokens[rows, chosen], n_labels,
                               np.asarray(candidate_k)[chosen]),
    }
    if calibrated is not None:
        cascade, _ = fit_cascade(calibrated[train], data.gold[train], data.prompt_tokens[train], candidate_k,
                                 n_labels)
        played = replay(cascade, calibrated[val], tokens, candidate_k)
        figures["cascade"] = {**_figures(played.answers, gold, played.tokens, n_labels, played.k),
                              **cascade.describe()}
        answered, spent, count = _combined(cascade, controller, data.features[val], calibrated[val], tokens,
                                           candidate_k)
        figures["combined"] = _figures(answered, gold, spent, n_labels, count)
    return figures
