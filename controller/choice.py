"""How a fit chooses what the default request serves, from held-back examples, without mistaking noise for
a difference.

A fit compares a small family of options fixed in advance on the same held-back examples: the unfitted
default, every candidate count (with its fitted calibration), and the two-stage cascades between them. On a
hundred examples an accuracy moves by ±4–5 points by chance, so the option with the best point estimate is
mostly the luckiest. The rule here: take the cheapest option whose macro-F1 is not significantly below the
best's (a paired bootstrap on the same items, one-sided 5%). The task's default count is replaced only by an
option that is significantly better, or cheaper and shown to lose at most ``MARGIN`` (non-inferiority,
one-sided 95%); with fewer than ``MIN_PER_LABEL`` held-back examples per label the fit keeps the default and
says so.

The chosen option's held-back macro-F1 is the figure it was chosen on: out of sample for its calibration and
thresholds, but selected among the family, so a few points optimistic."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.calibration_fit import TaskCalibration, out_of_fold
from controller.cascade import (
    HEAD_STAGE,
    HIDDEN_STAGE,
    INNER_TOLERANCE,
    Cascade,
    cascade_folds,
    cheapest_thresholds,
    out_of_fold_replay,
    stage_name,
)
from controller.metrics import Interval, macro_f1, macro_f1_rows, significantly_above, significantly_below
from controller.training import TrainingData

RESAMPLES = 2000
ALPHA = 0.05
# Fewer held-back examples than this per label: too thin to overrule the task's default count.
MIN_PER_LABEL = 10
# How much macro-F1 a cheaper option may be shown to lose at most (one-sided 95%) and still replace the
# default count: the noise of a hundred held-back examples is ±4 points, so "not significantly worse" alone
# would trade real accuracy for tokens.
MARGIN = 0.02


@dataclass(frozen=True)
class Option:
    """One way to serve the default request, with what it answered on each held-back example (judged out of
    sample: thresholds and calibration fitted on other folds) and what each answer cost."""

    name: str
    cascade: Cascade  # what serves it (a fixed count is a one-stage cascade)
    answers: np.ndarray  # (n,) label indices
    tokens: np.ndarray  # (n,) prompt tokens
    is_default: bool = False
    # Its answers past the examples another option was judged on are evidence of its own (the embedding head,
    # cross-fitted on every labeled example), used when the two are compared.
    extends: bool = False

    @property
    def mean_tokens(self) -> float:
        return float(np.mean(self.tokens))


@dataclass(frozen=True)
class Choice:
    """The option chosen, what it is expected to do on new inputs, and why."""

    option: Option
    macro_f1: Interval  # held back, with its 95% bootstrap interval
    reason: str
    candidates: list[dict[str, object]]  # every option: name, macro-F1, tokens, and whether it fell short

    @property
    def serves_default(self) -> bool:
        return self.option.is_default

    def describe(self) -> dict[str, object]:
        interval = self.macro_f1
        return {"option": self.option.name, "serves_default": self.serves_default,
                "stages": list(self.option.cascade.stages),
                "macro_f1": round(interval.point, 4), "macro_f1_interval": [round(interval.low, 4),
                                                                            round(interval.high, 4)],
                "mean_prompt_tokens": round(self.option.mean_tokens, 1), "reason": self.reason,
                "candidates": self.candidates}


def _line(option: Option, interval: Interval) -> str:
    half = (interval.high - interval.low) / 2
    return f"{option.name}: {interval.point:.2f} ± {half:.2f} at {option.mean_tokens:.0f} tokens"


def choose(options: Sequence[Option], gold: np.ndarray, n_labels: int, seed: int = 0) -> Choice:
    """The option the default request is served with (see the module's docstring). ``options`` hold one
    default (``is_default``) where the task's default count was scored; without it, the cheapest option not
    significantly below the best serves.

    An option may have been judged on only the leading examples of ``gold`` (a count scored on fewer, where
    evidence is dear; the embedding head on every labeled example): each option's figure is on its own
    examples, and two options are compared on the examples both were judged on, the head with its further
    examples too (``_Resampled``)."""
    gold = np.asarray(gold)
    resampled = _Resampled(gold, n_labels, seed)

    def interval(option: Option) -> Interval:
        low, high = np.percentile(resampled.values(option, len(option.answers)), [2.5, 97.5])
        return Interval(scores[option.name], float(low), float(high))

    def differences(a: Option, b: Option) -> np.ndarray:
        n = min(len(a.answers), len(b.answers))
        return resampled.values(a, n) - resampled.values(b, n)

    scores = {o.name: macro_f1(gold[:len(o.answers)], o.answers, n_labels) for o in options}
    # Ties go to the cheaper option, then to the default.
    best = max(options, key=lambda o: (round(scores[o.name], 9), -o.mean_tokens, o.is_default))
    below_best = {o.name: o is not best and significantly_below(differences(o, best), ALPHA) for o in options}
    candidates: list[dict[str, object]] = [
        {"option": o.name, "macro_f1": round(scores[o.name], 4), "mean_prompt_tokens": round(o.mean_tokens, 1),
         "held_back": len(o.answers), "significantly_below_best": below_best[o.name]}
        for o in sorted(options, key=lambda o: o.mean_tokens)]
    eligible = sorted((o for o in options if not below_best[o.name]), key=lambda o: (o.mean_tokens, not o.is_default))
    default = next((o for o in options if o.is_default), None)
    if default is None:
        chosen = eligible[0]
        return Choice(chosen, interval(chosen), f"{_line(chosen, interval(chosen))}; the cheapest option not "
                      "significantly below the best (the task's default count was not weighed)", candidates)
    if len(default.answers) < MIN_PER_LABEL * n_labels:
        return Choice(default, interval(default), f"{_line(default, interval(default))}; kept: "
                      f"{len(default.answers)} held-back examples for {n_labels} labels is fewer than "
                      f"{MIN_PER_LABEL} per label, too few to overrule the task's default count", candidates)
    chosen, reason = default, "no option is significantly better than the default count, or as good and cheaper"
    # Cheapest first among the options not significantly below the best; the default wins where it comes.
    for option in eligible:
        if option is default:
            chosen, reason = default, "the cheapest option not significantly below the best"
            break
        if min(len(option.answers), len(default.answers)) < MIN_PER_LABEL * n_labels:
            continue  # judged on too few examples to overrule the default count
        against_default = differences(option, default)
        if option.mean_tokens < default.mean_tokens and as_good(against_default):
            low = float(np.percentile(against_default, 100 * ALPHA))
            chosen, reason = option, (f"at most {max(0.0, -low):.2f} below the default count ({default.name}, "
                                      "one-sided 95%) and cheaper")
            break
        if option.mean_tokens >= default.mean_tokens and significantly_above(against_default, ALPHA):
            chosen, reason = option, f"significantly better than the default count ({default.name})"
            break
    line = f"{_line(chosen, interval(chosen))}; {reason}"
    if best is not chosen:  # never significantly better: the chosen option is not significantly below it
        line += f"; {best.name} ({scores[best.name]:.2f} at {best.mean_tokens:.0f} tokens) not significantly better"
    return Choice(chosen, interval(chosen), line, candidates)


class _Resampled:
    """Options' macro-F1 on bootstrap resamples, for comparing two of them. Two options are paired on the
    leading examples both were judged on, the same draws for both. An option that ``extends`` (the embedding
    head, judged on every labeled example) adds its own further examples, resampled on their own, to its side
    of the comparison: a stratified bootstrap of the difference, which its extra evidence tightens. Counts
    judged on more examples than another do not: they are compared on the shared ones, where pairing two
    answers of the same model removes most of the noise."""

    def __init__(self, gold: np.ndarray, n_labels: int, seed: int) -> None:
        self.gold, self.n_labels, self.seed = gold, n_labels, seed
        self._draws: dict[tuple[int, int], np.ndarray] = {}
        self._values: dict[tuple[str, int], np.ndarray] = {}

    def _rows(self, start: int, end: int) -> np.ndarray:
        """(RESAMPLES, end - start) draws from examples start..end-1, the same for every option."""
        if (start, end) not in self._draws:
            rng = np.random.default_rng([self.seed, start, end])
            self._draws[start, end] = start + rng.integers(0, end - start, (RESAMPLES, end - start))
        return self._draws[start, end]

    def values(self, option: Option, n: int) -> np.ndarray:
        """``option``'s macro-F1 on each resample of the first ``n`` examples (and, where it extends, of its
        own further ones)."""
        key = (option.name, n)
        if key not in self._values:
            rows = self._rows(0, n)
            if option.extends and len(option.answers) > n:
                rows = np.concatenate([rows, self._rows(n, len(option.answers))], axis=1)
            self._values[key] = macro_f1_rows(self.gold[rows], option.answers[rows], self.n_labels)
        return self._values[key]


def as_good(differences: np.ndarray) -> bool:
    """Non-inferiority: the one-sided 95% lower bound of the difference (option minus default) is above
    ``-MARGIN``. Not being significantly worse is weak evidence on a hundred examples; a cheaper option must
    show it loses at most ``MARGIN`` of macro-F1."""
    return bool(np.percentile(differences, 100 * ALPHA) >= -MARGIN)


def out_of_fold_calibrated(data: TrainingData, calibration: TaskCalibration, candidate_k: Sequence[int],
                           n_labels: int, seed: int) -> np.ndarray:
    """(n, K, L): each held-back example as ``calibration: "auto"`` would serve it, its count's fitted method
    fitted on the other folds (the folds the method was chosen on), with the fitted temperature: what the
    options are judged on. Rows a count was not scored on keep their uniform distribution."""
    out = data.distributions.copy()
    for j, k in enumerate(candidate_k):
        chosen, n = calibration.counts[int(k)], data.n_scored(j)
        predicted = out_of_fold(chosen.method, data.distributions[:n, j], data.gold[:n], n_labels, seed,
                                {m: d[:n, j] for m, d in data.prompted.items()})
        out[:n, j] = chosen.with_temperature(predicted if predicted is not None else data.distributions[:n, j])
    return out


def fit_options(data: TrainingData, calibrated: np.ndarray, judged: np.ndarray, candidate_k: Sequence[int],
                default_k: int, n_labels: int, seed: int, head: np.ndarray | None = None,
                hidden: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> list[Option]:
    """The family a fit chooses from: every candidate count, the one the task serves unfitted marked as the
    default, and the two-stage cascades between them, their thresholds judged out of fold on ``judged`` (the
    out-of-fold calibrated distributions) and fitted for serving on ``calibrated`` (every example). Each option
    is judged on the examples all its counts were scored on.

    ``head``: the embedding head's cross-fitted distributions (n_labeled, L) of every labeled example, the
    held-back ones first in their order, where the task has one: the head alone (no tokens, judged on every
    labeled example) and the head followed by each count (on the held-back ones) join the family.

    ``hidden``: per hidden-state head, its option's name, and its cross-fitted distributions and prompt tokens of
    the labeled examples it read, in the same order: each joins alone, judged on all of them."""
    counts = [int(k) for k in candidate_k]
    tokens = data.prompt_tokens
    scored = {k: data.n_scored(j) for j, k in enumerate(counts)}
    options = [Option(f"k={k}", Cascade((k,), ()), judged[:scored[k], j].argmax(axis=1), tokens[:scored[k], j],
                      k == default_k) for j, k in enumerate(counts)]
    pairs = list(itertools.combinations(counts, 2))
    for name, probs, prompt_tokens in hidden:
        options.append(Option(name, Cascade((HIDDEN_STAGE,), ()), probs.argmax(axis=1),
                              np.asarray(prompt_tokens, dtype=float), extends=True))
    if head is not None:
        options.append(Option("head", Cascade((HEAD_STAGE,), ()), head.argmax(axis=1), np.zeros(len(head)),
                              extends=True))
        judged = with_head(head, judged, tokens, counts)[0]
        calibrated, tokens, counts = with_head(head, calibrated, tokens, counts)
        scored = {HEAD_STAGE: len(data.gold), **scored}
        pairs = [(HEAD_STAGE, k) for k in counts[1:]] + pairs
    for stages in pairs:
        option = _two_stage(stages, scored, judged, calibrated, data.gold, tokens, counts, n_labels, seed)
        if option is not None:
            options.append(option)
    return options


def _two_stage(stages: tuple[int, int], scored: dict[int, int], judged: np.ndarray, calibrated: np.ndarray,
               gold: np.ndarray, tokens: np.ndarray, counts: list[int], n_labels: int, seed: int) -> Option | None:
    """The cascade of ``stages`` judged on the examples both were scored on; None where some fold admits no
    thresholds, or where its second stage answered none of them (its first stage alone, already in the family:
    judged again on fewer examples, the embedding head's than it was on all of them, its wider interval would
    hide a difference the first stage's own evidence shows). Its thresholds keep the best fixed count's
    figures among the counts scored on those examples too: a count scored on fewer has only placeholders past
    them, which would lower the bar."""
    n = min(scored[k] for k in stages)
    columns = [j for j, k in enumerate(counts) if scored[k] >= n]
    judged, calibrated, tokens = judged[:n, columns], calibrated[:n, columns], tokens[:n, columns]
    counts = [counts[j] for j in columns]
    folds = cascade_folds(n, seed)
    played = (out_of_fold_replay(stages, judged, gold[:n], tokens, counts, n_labels, folds)
              if len(folds) > 1 else None)
    served = cheapest_thresholds(stages, calibrated, gold[:n], tokens, counts, n_labels, INNER_TOLERANCE)
    if played is None or served is None:
        return None
    if np.array_equal(played.tokens, tokens[:, counts.index(stages[0])]):
        return None
    return Option(f"{stage_name(stages[0])} then {stage_name(stages[1])}", served, played.answers, played.tokens)


def with_head(head: np.ndarray | None, calibrated: np.ndarray, tokens: np.ndarray,
              candidate_k: Sequence[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The held-back arrays with the embedding head as a first column (``HEAD_STAGE``, no tokens), so that a
    cascade starting with it replays like any other; unchanged without a head."""
    if head is None:
        return calibrated, tokens, [int(k) for k in candidate_k]
    n = len(calibrated)
    first = np.zeros((n, 1), dtype=tokens.dtype)
    return (np.concatenate([head[:n, None], calibrated], axis=1), np.concatenate([first, tokens], axis=1),
            [HEAD_STAGE, *map(int, candidate_k)])
