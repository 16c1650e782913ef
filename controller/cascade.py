"""The confidence cascade: answer each input with few demonstrations first, and give more only to the inputs
the model is unsure of.

Stage 0 scores every input at a small count; an input whose calibrated margin (top probability minus the
runner-up's) is below the stage's threshold goes on to the next, larger count, and so on; the last stage
answers whatever reaches it. The model's own confidence is the signal: it predicts whether an input needs
demonstrations far better than the embedding features the meta-controller reads. Stages and thresholds are
fitted per task from the held-back pass the fit job makes at every candidate count (``fit_cascade``), where
the cascade can be replayed exactly: every held-back input is scored at every count."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.metrics import macro_f1

# An input goes on when its margin is below the threshold: -1 never escalates, 2 always does.
NEVER = -1.0
# A stage that is no count: the task's embedding head (``controller.heads``), which answers from the input's
# retrieval embedding with no prompt at all. It can only be a cascade's first stage; the inputs it is unsure
# of go on to the counts after it.
HEAD_STAGE = -1
# The hidden-state head (``controller.hidden_fit``): a prompt at the head's own count, read through the model's
# last hidden state instead of its label tokens. It serves alone, a cascade of that one stage.
HIDDEN_STAGE = -2
# Threshold candidates per stage: these quantiles of the stage's held-back margins.
QUANTILES = np.linspace(0.0, 1.0, 21)
MAX_STAGES = 3
FOLDS = 5
# The fit keeps the cheapest chain of counts whose out-of-fold accuracy and macro-F1 are within this much of
# the best fixed count's (the service's target: at most a point below it).
TOLERANCE = 0.01
# Within a fold, thresholds are the cheapest that lose nothing on the examples choosing them: they look a
# little better there than they are, and the out-of-fold figures judge them.
INNER_TOLERANCE = 0.0


def margins(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the runner-up's, per row of (..., n_labels)."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=-1)
    return top[..., -1] - top[..., -2] if top.shape[-1] > 1 else np.ones(top.shape[:-1])


@dataclass(frozen=True)
class Cascade:
    """Counts tried in order (increasing), and per stage but the last the margin below which an input goes on.
    A first stage of ``HEAD_STAGE`` is the embedding head: no prompt, no tokens."""

    stages: tuple[int, ...]
    thresholds: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.stages or len(self.thresholds) != len(self.stages) - 1:
            raise ValueError("a cascade needs one threshold per stage but the last")
        if list(self.stages) != sorted(set(self.stages)):
            raise ValueError("a cascade's counts must increase")

    def goes_on(self, stage: int, probs: np.ndarray) -> np.ndarray:
        """Which inputs answered at ``stage`` with (n, n_labels) ``probs`` go on to the next stage."""
        if stage >= len(self.thresholds):
            return np.zeros(len(probs), dtype=bool)
        return margins(probs) < self.thresholds[stage]

    @property
    def head_first(self) -> bool:
        return self.stages[0] == HEAD_STAGE

    @property
    def hidden(self) -> bool:
        return self.stages == (HIDDEN_STAGE,)

    def describe(self) -> dict:
        return {"stages": list(self.stages), "thresholds": [round(t, 6) for t in self.thresholds]}


def stage_name(k: int) -> str:
    """How a stage is named in a fit's options: "head", "hidden" or "k=2"."""
    return {HEAD_STAGE: "head", HIDDEN_STAGE: "hidden"}.get(k, f"k={k}")


def escalation_order(probs: np.ndarray, goes_on: np.ndarray) -> list[int]:
    """The inputs that go on, least confident first: the order a token budget is spent in."""
    candidates = np.flatnonzero(goes_on)
    return [int(i) for i in candidates[np.argsort(margins(probs[candidates]), kind="stable")]]


@dataclass(frozen=True)
class Replay:
    """A cascade run on held-back examples scored at every count."""

    answers: np.ndarray  # (n,) predicted label index
    tokens: np.ndarray  # (n,) prompt tokens over every stage the input went through
    k: np.ndarray  # (n,) the count that answered

    def figures(self, gold: np.ndarray, n_labels: int) -> dict[str, float]:
        return {"accuracy": float((self.answers == gold).mean()),
                "macro_f1": macro_f1(gold, self.answers, n_labels),
                "mean_k": float(self.k.mean()),
                "mean_prompt_tokens": float(self.tokens.mean())}


def replay(cascade: Cascade, probs: np.ndarray, tokens: np.ndarray, candidate_k: Sequence[int]) -> Replay:
    """What ``cascade`` answers for held-back inputs: ``probs`` (n, K, L) calibrated distributions and
    ``tokens`` (n, K) prompt tokens at each of ``candidate_k``."""
    columns = [list(candidate_k).index(k) for k in cascade.stages]
    n = len(probs)
    active = np.ones(n, dtype=bool)
    spent = np.zeros(n)
    answers = np.zeros(n, dtype=np.int64)
    answered_k = np.zeros(n, dtype=np.int64)
    for s, (k, j) in enumerate(zip(cascade.stages, columns, strict=True)):
        spent[active] += tokens[active, j]
        answers[active] = probs[active, j].argmax(axis=1)
        answered_k[active] = k
        active &= cascade.goes_on(s, probs[:, j])
    return Replay(answers, spent, answered_k)


def _threshold_grid(probs: np.ndarray) -> list[float]:
    """NEVER, then the margins' quantiles, then a threshold above every margin (all go on)."""
    values = np.quantile(margins(probs), QUANTILES[1:-1]).tolist()
    return [NEVER, *sorted(set(values)), 2.0]


def _target(probs: np.ndarray, gold: np.ndarray, tokens: np.ndarray, counts: list[int],
            n_labels: int) -> tuple[dict[int, dict[str, float]], float, float]:
    """Each fixed count's figures, and the best accuracy and macro-F1 among them."""
    fixed = {k: replay(Cascade((k,), ()), probs, tokens, counts).figures(gold, n_labels) for k in counts}
    return fixed, max(f["accuracy"] for f in fixed.values()), max(f["macro_f1"] for f in fixed.values())


def cheapest_thresholds(stages: tuple[int, ...], probs: np.ndarray, gold: np.ndarray, tokens: np.ndarray,
                        counts: list[int], n_labels: int, tolerance: float) -> Cascade | None:
    """The thresholds (on a quantile grid of these examples' margins) that make ``stages`` cheapest while its
    accuracy and macro-F1 on these examples stay within ``tolerance`` of the best fixed count's; None when
    no thresholds do."""
    _, best_accuracy, best_f1 = _target(probs, gold, tokens, counts, n_labels)
    grids = [_threshold_grid(probs[:, counts.index(k)]) for k in stages[:-1]]
    best: tuple[float, Cascade] | None = None
    for thresholds in itertools.product(*grids):
        cascade = Cascade(stages, tuple(float(t) for t in thresholds))
        figures = replay(cascade, probs, tokens, counts).figures(gold, n_labels)
        if (figures["accuracy"] >= best_accuracy - tolerance - 1e-12
                and figures["macro_f1"] >= best_f1 - tolerance - 1e-12
                and (best is None or figures["mean_prompt_tokens"] < best[0] - 1e-9)):
            best = (figures["mean_prompt_tokens"], cascade)
    return best[1] if best is not None else None


def out_of_fold_replay(stages: tuple[int, ...], probs: np.ndarray, gold: np.ndarray, tokens: np.ndarray,
                       counts: list[int], n_labels: int, folds: list[np.ndarray]) -> Replay | None:
    """``stages`` with thresholds chosen on the other folds, replayed on each fold: honest answers for the
    stage counts, since no threshold is judged on the examples that chose it. None where some fold's examples
    admit no thresholds."""
    n = len(gold)
    answers, spent, answered_k = np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.int64)
    for fold in folds:
        rest = np.setdiff1d(np.arange(n), fold)
        cascade = cheapest_thresholds(stages, probs[rest], gold[rest], tokens[rest], counts, n_labels, INNER_TOLERANCE)
        if cascade is None:
            return None
        played = replay(cascade, probs[fold], tokens[fold], counts)
        answers[fold], spent[fold], answered_k[fold] = played.answers, played.tokens, played.k
    return Replay(answers, spent, answered_k)


def cascade_folds(n: int, seed: int) -> list[np.ndarray]:
    """The folds a cascade's thresholds are judged out of."""
    order = np.random.default_rng(seed).permutation(n)
    return [f for f in np.array_split(order, min(FOLDS, n)) if len(f)]


def _out_of_fold(stages: tuple[int, ...], probs: np.ndarray, gold: np.ndarray, tokens: np.ndarray,
                 counts: list[int], n_labels: int, folds: list[np.ndarray]) -> dict[str, float] | None:
    played = out_of_fold_replay(stages, probs, gold, tokens, counts, n_labels, folds)
    return played.figures(gold, n_labels) if played is not None else None


def fit_cascade(probs: np.ndarray, gold: np.ndarray, tokens: np.ndarray, candidate_k: Sequence[int],
                n_labels: int, tolerance: float = TOLERANCE, seed: int = 0) -> tuple[Cascade, dict]:
    """The task's cascade from held-back examples scored at every one of ``candidate_k``: ``probs`` (n, K, L)
    calibrated, ``tokens`` (n, K) prompt tokens.

    Which counts to chain (up to ``MAX_STAGES``) is chosen by cross-validation: each chain's thresholds are
    fitted on ``FOLDS - 1`` folds and replayed on the last, and the chain kept is the cheapest whose
    out-of-fold accuracy and macro-F1 are within ``tolerance`` of the best fixed count's. Its thresholds are
    then fitted on every example. Where no chain is, the most accurate fixed count (a one-stage cascade).
    Returns it and its figures: out of fold for the chosen chain, held back (in sample) for its final
    thresholds, and every fixed count's."""
    probs, gold, tokens = np.asarray(probs), np.asarray(gold), np.asarray(tokens)
    counts = [int(k) for k in candidate_k]
    fixed, best_accuracy, best_f1 = _target(probs, gold, tokens, counts, n_labels)
    folds = cascade_folds(len(gold), seed)
    chosen: tuple[tuple[int, ...], dict[str, float]] | None = None
    for length in range(2, MAX_STAGES + 1):
        for stages in itertools.combinations(counts, length):
            figures = _out_of_fold(stages, probs, gold, tokens, counts, n_labels, folds) if len(folds) > 1 else None
            if (figures is not None and figures["accuracy"] >= best_accuracy - tolerance - 1e-12
                    and figures["macro_f1"] >= best_f1 - tolerance - 1e-12
                    and (chosen is None or figures["mean_prompt_tokens"] < chosen[1]["mean_prompt_tokens"])):
                chosen = (stages, figures)
    cascade = (cheapest_thresholds(chosen[0], probs, gold, tokens, counts, n_labels, INNER_TOLERANCE)
               if chosen is not None else None)
    # A fixed count that is itself within the tolerance and cheaper than the chain also wins.
    within = [k for k in counts if fixed[k]["accuracy"] >= best_accuracy - tolerance - 1e-12
              and fixed[k]["macro_f1"] >= best_f1 - tolerance - 1e-12]
    cheapest_fixed = min(within, key=lambda k: fixed[k]["mean_prompt_tokens"]) if within else max(
        counts, key=lambda k: (fixed[k]["accuracy"], fixed[k]["macro_f1"], -k))
    fixed_is_cheaper = chosen is not None and cheapest_fixed in within and (
        fixed[cheapest_fixed]["mean_prompt_tokens"] <= chosen[1]["mean_prompt_tokens"])
    if cascade is None or chosen is None or fixed_is_cheaper:
        cascade = Cascade((cheapest_fixed,), ())
        out_of_fold = fixed[cheapest_fixed]
    else:
        out_of_fold = chosen[1]
    held_back = replay(cascade, probs, tokens, counts).figures(gold, n_labels)
    return cascade, {**cascade.describe(), "held_back": held_back, "out_of_fold": out_of_fold,
                     "fixed": {str(k): f for k, f in fixed.items()}}
