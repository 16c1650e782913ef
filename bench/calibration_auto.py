"""The default calibration (`auto`) against every other mode: quality, confidence and engine cost.

    python -m bench.calibration_auto                      # ten datasets, kNN and random, k=4 (k=8 on four), 2 seeds
    python -m bench.calibration_auto --table bench/results/calibration-auto-*.json    # re-print saved results

Per seed, dataset, selection and k, as the service does it: a pool of --pool-size shuffled training examples;
the task's fit holds back --fit-size of them (the fit job's `train_size`), scores them at k with
demonstrations from the rest (`controller.training.collect`, the job's own pass, its cost recorded) and fits the
task's calibration on them (`fit_calibration`). Then --n-test test items are classified in batches of --batch
with demonstrations from the whole pool, under each mode:

- `none`, `contextual`, `domain-ref` (Fei et al.: 20 strings per demonstration set), `domain` (the service's
  `calibration: "domain"` settings, kNN sets included), `batch` (each request's own mean, Zhou et al.);
- `auto` (the default after the fit: the method the fit chose for this count, with its temperature) and
  `auto-unfitted` (the default before the fit).

Every mode's answers come from the same prompts, scored once per configuration (from an empty prefix cache),
batch by batch as requests would be: a batch's inputs first, then each mode's calibration prompts, which find
the batch's demonstrations in the prefix cache as they would in a request. A mode's engine time and computed
tokens are the inputs' plus its own calibration prompts'; a calibration prompt that another mode already scored
is charged as it was first computed. Modes without calibration prompts cost what `none` costs. Batches are
shuffled test items, so `batch` sees a typical label mix (its best case; see the README for a skewed batch).
The domain strings draw on the pool's and the test items' inputs (a task's labeled and unlabeled examples).

The summary gives, per dataset, macro-F1, accuracy, ECE (10 bins) and log-loss of each mode (seeds pooled);
the difference of `auto` to each other mode with a paired bootstrap 95% interval (test items resampled within
each seed); extra engine-computed tokens and engine time over `none`; the fit's cost; and a leave-one-dataset-out
choice of the unfitted default among the deterministic modes within the 3% cost cap.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.host import describe_host
from bench.harness.inprocess import (
    EmbeddedTask,
    Embeddings,
    add_engine_arguments,
    embedded_task,
    labeled_pool,
    run_benchmark,
    task_data,
)
from bench.harness.results import ResultsLog, add_out_argument, read_rows
from bench.harness.tables import print_table
from controller.bias import BiasCache
from controller.calibration import (
    AutoCalibrator,
    BatchCalibrator,
    CalibrationSources,
    Calibrator,
    ContextualCalibrator,
    DomainCalibrator,
    NoCalibration,
)
from controller.calibration_fit import TaskCalibration
from controller.counts import TaskDefaults
from controller.domain import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainWords
from controller.metrics import bootstrap_rows, expected_calibration_error, log_loss, macro_f1, macro_f1_rows
from controller.predictor import PredictOptions, Predictor, PredictResult, Scores
from controller.retrieval import retriever_for
from controller.scoring import ScoredPrompt
from controller.training import SERVED_SEED, TrainingData, collect, fit_calibration, split_for_fit

MODES = ("none", "contextual", "domain-ref", "domain", "batch", "auto", "auto-unfitted")
# Modes whose answers do not depend on the other inputs of a request or on traffic: the unfitted default's
# candidates.
DETERMINISTIC = ("none", "contextual", "domain-ref", "domain", "auto-unfitted")
COST_CAP = 0.03  # extra engine-computed tokens over `none` the default may spend
K8_DATASETS = ("sst2", "trec", "agnews", "rte")
ALL_DATASETS = ("sst2", "trec", "agnews", "rte", "cr", "mr", "subj", "poem_sentiment", "tweet_eval_hate",
                "tweet_eval_offensive")


def calibrator(mode: str, selection: str, words: DomainWords, fit: TaskCalibration) -> Calibrator:
    """A fresh calibrator (its own bias cache, as a new pool version has) for one mode."""
    cache = BiasCache()
    if mode == "none":
        return NoCalibration()
    if mode == "contextual":
        return ContextualCalibrator(cache)
    if mode == "domain-ref":
        return DomainCalibrator(REFERENCE_DOMAIN, words, cache)
    if mode == "domain":
        return DomainCalibrator(DEFAULT_DOMAIN, words, cache)
    if mode == "batch":
        return BatchCalibrator(cache)
    sources = CalibrationSources(selection=selection, words=lambda: words, cache=cache,
                                 fit=fit if mode == "auto" else None)
    return AutoCalibrator(sources)


async def evaluate(args: argparse.Namespace, scorer, embeddings: Embeddings, log: ResultsLog) -> None:
    began = time.perf_counter()
    done = set()
    for row in read_rows(args.resume or []):  # configurations an earlier run has: kept, not run again
        if row["selection"] in args.selection:
            log.rows.append(row)
            done.add((row["dataset"], row["selection"], row["k"], row["seed"]))
    for k in args.k:  # the first k on every dataset and seed before the others; a run cut short has those
        datasets = args.datasets if k == args.k[0] else [d for d in args.datasets if d in args.more_k_datasets]
        for seed in args.seeds:
            for dataset in datasets:
                for selection in args.selection:
                    if (dataset, selection, k, seed) in done:
                        continue
                    if args.time_limit_s and time.perf_counter() - began > args.time_limit_s:
                        print("time limit reached", flush=True)
                        return
                    row = await configuration(args, scorer, embeddings, dataset, selection, k, seed)
                    log.append(row, {key: row[key] for key in ("dataset", "selection", "k", "seed", "fit")}
                               | {m: round(v["macro_f1"], 3) for m, v in row["modes"].items()})


@dataclass
class Fitted:
    """The fit job's pass at k and what it chose."""

    calibration: TaskCalibration
    training: TrainingData
    request_seed: int
    held_back: int
    fit_size: int
    seconds: float


async def fit_task(args: argparse.Namespace, scorer, task: EmbeddedTask, selection: str, k: int, seed: int) -> Fitted:
    """The fit job's pass at k. Per-input sets (kNN): the first --fit-size of the (shuffled) pool held back,
    demonstrations from the rest. One shared set (random): as the service splits it (`split_for_fit`), held-back
    examples scored under the very set a default request is served with."""
    data, n_pool, vectors = task.data, task.n_pool, task.vectors
    fit_size = min(args.fit_size, n_pool - k)
    served: dict[int, list[str]] = {}
    if retriever_for(selection).shares_one_set:
        split = split_for_fit(n_pool, selection, [k], fit_size, seed)
        held_rows, demo_rows, fit_seed = split.held, split.pool, SERVED_SEED
        served = {c: [task.pool.ids[r] for r in rows] for c, rows in split.served.items()}
    else:
        held_rows, demo_rows, fit_seed = list(range(fit_size)), list(range(fit_size, n_pool)), seed
    fit_pool = labeled_pool(data, [data.pool_rows[i] for i in demo_rows], vectors[demo_rows])
    held = [data.query(data.pool_rows[i]) for i in held_rows]
    held_gold = [data.pool_rows[i]["label"] for i in held_rows]
    await scorer.reset_prefix_cache()
    t0 = time.perf_counter()
    training = await collect(data.builder(scorer, fit_pool), held, vectors[held_rows], held_gold, data.labels, [k],
                             selection, fit_seed, scorer, words=task.words)
    calibration = fit_calibration(training, selection, [k], len(data.labels), seed, served)
    # Random demonstrations as a default request gets them (its seed); kNN's request seed only seeds the
    # domain strings.
    return Fitted(calibration, training, SERVED_SEED if served else seed, len(held_rows), fit_size,
                  time.perf_counter() - t0)


async def score_modes(args: argparse.Namespace, scorer, task: EmbeddedTask, selection: str, k: int,
                      fit: TaskCalibration, request_seed: int) -> dict[str, ModeResult]:
    """Every mode's answers to the test items, batch by batch, and what each cost."""
    data, queries, query_vectors = task.data, task.queries, task.query_vectors
    base = Predictor.from_options(data.builder(scorer, task.pool), data.labels, PredictOptions(
        demos=k, selection=selection, calibration="none", seed=request_seed), TaskDefaults(k))
    batches = [base.prompts_for(queries[s:s + args.batch], query_vectors[s:s + args.batch])
               for s in range(0, len(queries), args.batch)]
    modes = [m for m in args.modes if m != "domain-ref" or selection != "knn" or args.reference_knn]
    predictors = {m: base.with_calibrator(calibrator(m, selection, task.words, fit)) for m in modes}
    results = {m: ModeResult() for m in modes}
    await scorer.reset_prefix_cache()
    for prompts in batches:
        # One batch as a request would be served: its inputs first (shared by every mode), then each mode's
        # calibration prompts, which read the inputs' demonstrations from the prefix cache. Planned batch by
        # batch, so a set estimated in an earlier batch is a bias-cache hit, as in the service.
        t = time.perf_counter()
        inputs = await base.score(base.plan_for(prompts), scorer)
        none_s = time.perf_counter() - t
        # A calibration prompt another mode already scored in this batch (domain's strings are the first of
        # domain-ref's; auto on a shared set asks for domain's) is charged as it was first computed, with its
        # share of that call's time, as if each mode ran alone, not as the prefix-cache hit it would be here.
        seen: dict[tuple[int, ...], tuple[ScoredPrompt, float]] = {}
        for mode, predictor in predictors.items():
            plan = predictor.plan_for(prompts)
            extra = [ids for _, ids in plan.calibration.prompts]
            new = list(dict.fromkeys(tuple(ids) for ids in extra if tuple(ids) not in seen))
            if new:
                t = time.perf_counter()
                scored_new = await scorer.score([list(ids) for ids in new], base.continuations())
                share = (time.perf_counter() - t) / len(new)
                seen.update({ids: (s, share) for ids, s in zip(new, scored_new, strict=True)})
            scored = [seen[tuple(ids)][0] for ids in extra]
            extra_s = sum(seen[tuple(ids)][1] for ids in extra)
            results[mode].add(predictor.calibrate(plan, Scores(inputs.inputs, scored)), data.labels,
                              none_s + extra_s, len(extra))
    return results


async def configuration(args: argparse.Namespace, scorer, embeddings: Embeddings, dataset: str, selection: str,
                        k: int, seed: int) -> dict:
    task = embedded_task(task_data(dataset, args.pool_size, args.n_test, seed), embeddings)
    data = task.data
    fitted = await fit_task(args, scorer, task, selection, k, seed)
    chosen = fitted.calibration.for_count(k)
    results = await score_modes(args, scorer, task, selection, k, fitted.calibration, fitted.request_seed)
    gold = np.array([data.labels.index(label) for label in task.gold])
    return {
        "dataset": dataset, "selection": selection, "k": k, "seed": seed, "n": len(gold), "n_pool": task.n_pool,
        "fit_size": fitted.fit_size, "model": scorer.model_name, "dtype": getattr(scorer, "dtype", None),
        "host": describe_host(getattr(scorer, "dtype", None)),
        "scorer": args.scorer, "gold": gold.tolist(), "labels": data.labels,
        "fit": chosen.method, "fit_temperature": chosen.temperature, "fit_figures": chosen.describe(),
        "fit_cost": {**fitted.training.engine_tokens, "seconds": fitted.seconds, "held_back": fitted.held_back},
        "modes": {m: r.figures(gold, len(data.labels)) for m, r in results.items()},
    }


class ModeResult:
    """One mode's answers and engine cost over a configuration's batches."""

    def __init__(self) -> None:
        self.probs: list[list[float]] = []
        self.got: dict[str, int] = defaultdict(int)
        self.usage: dict[str, int] = defaultdict(int)
        self.engine_s = 0.0

    def add(self, result: PredictResult, labels: Sequence[str], engine_s: float, calibration_prompts: int) -> None:
        self.probs += [[p.probs[label] for label in labels] for p in result.predictions]
        for p in result.predictions:
            self.got[p.calibration] += 1
        for name, value in vars(result.usage).items():
            self.usage[name] += value
        self.usage["calibration_prompts"] += calibration_prompts
        self.engine_s += engine_s

    def figures(self, gold: np.ndarray, n_labels: int) -> dict:
        p = np.array(self.probs)
        usage = self.usage
        return {
            "macro_f1": macro_f1(gold, p.argmax(1), n_labels), "accuracy": float(np.mean(p.argmax(1) == gold)),
            "ece": expected_calibration_error(p, gold), "log_loss": log_loss(p, gold),
            "engine_s": self.engine_s, "computed_tokens": usage["total_tokens"] - usage["cached_tokens"],
            "prompt_tokens": usage["prompt_tokens"], "calibration_prompts": usage["calibration_prompts"],
            "calibration_tokens": usage["calibration_tokens"], "got": dict(self.got),
            "probs": np.round(p, 6).tolist(),
        }


# --- summary -------------------------------------------------------------------------------------------------

def seed_paired_difference(rows: Sequence[dict], a: str, b: str, draws: int,
                           rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over seeds of macro-F1(a) - macro-F1(b), with a 95% interval: test items resampled within each
    seed (the same items for both modes), the seeds' differences averaged draw by draw."""
    diffs = np.zeros(draws)
    point = 0.0
    for row in rows:
        gold = np.array(row["gold"])
        n_labels = len(row["labels"])
        pa = np.array(row["modes"][a]["probs"]).argmax(1)
        pb = np.array(row["modes"][b]["probs"]).argmax(1)
        point += macro_f1(gold, pa, n_labels) - macro_f1(gold, pb, n_labels)
        idx = bootstrap_rows(len(gold), draws, rng)
        diffs += macro_f1_rows(gold[idx], pa[idx], n_labels) - macro_f1_rows(gold[idx], pb[idx], n_labels)
    n = len(rows)
    low, high = np.percentile(diffs / n, [2.5, 97.5])
    return point / n, float(low), float(high)


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def summarise(results: list[dict], draws: int = 1000) -> None:
    latest: dict[tuple, dict] = {}
    for r in results:  # a configuration rerun (a later file) replaces the earlier one
        latest[(r["dataset"], r["selection"], r["k"], r["seed"])] = r
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for (_dataset, selection, k, _seed), r in sorted(latest.items()):
        groups[(selection, k)].append(r)
    if not groups:
        print("no results")
        return
    any_row = next(iter(latest.values()))
    print(f"\nmodel {any_row['model']}, dtype {any_row['dtype']}, scorer {any_row['scorer']}")
    rng = np.random.default_rng(0)
    for (selection, k), rows in groups.items():
        by_dataset: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_dataset[r["dataset"]].append(r)
        modes = [m for m in MODES if all(m in r["modes"] for r in rows)]
        others = [m for m in modes if m not in ("auto", "auto-unfitted")]
        print(f"\n### {selection}, k={k}")
        _quality_table(by_dataset, modes)
        if "auto" in modes:
            _auto_table(by_dataset, others, draws, rng)
        _cost_table(rows, modes)
    _lodo(latest, draws, rng)


def _seeds_mean(rows: Sequence[dict], mode: str, field: str) -> float:
    return _mean([r["modes"][mode][field] for r in rows])


FIGURES = ("macro_f1", "accuracy", "ece", "log_loss")


def _figures_cell(values: Sequence[float]) -> str:
    return " / ".join(f"{v:.3f}" if i < 3 else f"{v:.2f}" for i, v in enumerate(values))


def _quality_table(by_dataset: dict[str, list[dict]], modes: list[str]) -> None:
    means: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = []
    for dataset, runs in sorted(by_dataset.items()):
        cells = []
        for m in modes:
            values = [_seeds_mean(runs, m, f) for f in FIGURES]
            for f, v in zip(FIGURES, values, strict=True):
                means[m][f].append(v)
            cells.append(_figures_cell(values))
        chose = ",".join(sorted({r["fit"] for r in runs}))
        rows.append([dataset, f"{runs[0]['n']}×{len(runs)}", chose, *cells])
    rows.append(["**mean**", "", "", *(_figures_cell([_mean(means[m][f]) for f in FIGURES]) for m in modes)])
    print_table(["dataset", "n×seeds", "fit chose", *modes], rows,
                "macro-F1 / accuracy / ECE / log-loss, mean over seeds:")


def _auto_table(by_dataset: dict[str, list[dict]], others: list[str], draws: int, rng: np.random.Generator) -> None:
    below, gains, rows = 0, [], []
    for dataset, runs in sorted(by_dataset.items()):
        points = {m: seed_paired_difference(runs, "auto", m, draws, rng) for m in others}
        best = min(others, key=lambda m: points[m][0])  # the mode auto trails most
        significant = points[best][2] < 0
        below += significant
        gains.append(points["none"][0] if "none" in points else float("nan"))
        rows.append([dataset, *(f"{p:+.3f} [{lo:+.3f}, {hi:+.3f}]" for p, lo, hi in points.values()), best,
                     "yes" if significant else "no"])
    print_table(["dataset", *others, "best other", "below best"], rows,
                "`auto` (fitted) minus each mode, macro-F1, paired bootstrap 95% interval; `below best`: the best "
                "other mode is significantly better")
    print(f"\n`auto` significantly below the best other mode on {below} of {len(by_dataset)} datasets; "
          f"mean gain over none {_mean(gains):+.3f}")


def _cost_table(runs: Sequence[dict], modes: list[str]) -> None:
    def total(mode: str, field: str) -> float:
        return sum(r["modes"][mode][field] for r in runs)

    none_tokens, none_s, n = total("none", "computed_tokens"), total("none", "engine_s"), sum(r["n"] for r in runs)
    print_table(["mode", "extra computed tokens", "extra engine time", "calibration prompts/input"],
                ([m, f"{100 * (total(m, 'computed_tokens') / none_tokens - 1):+.1f}%",
                  f"{100 * (total(m, 'engine_s') / none_s - 1):+.0f}%", f"{total(m, 'calibration_prompts') / n:.2f}"]
                 for m in modes),
                "Engine cost over none (total over total; modes without calibration prompts reuse none's scores):")
    fit_tokens, fit_s, held, calib = (sum(r["fit_cost"][f] for r in runs)
                                      for f in ("computed_tokens", "seconds", "held_back", "calibration_tokens"))
    print(f"\nFit (held-back pass at this count): {fit_tokens / held:.0f} computed tokens per held-back example "
          f"({calib / held:.0f} of them calibration), {fit_s / len(runs):.1f} s per fit of "
          f"{held // len(runs)} examples")


def _lodo_pick(by_dataset: dict[str, list[dict]], held_out: str, modes: list[str]) -> str:
    """The deterministic mode within the cost cap with the best mean macro-F1 over the datasets but ``held_out``."""
    rest = [r for d, rs in by_dataset.items() if d != held_out for r in rs]
    none_tokens = sum(r["modes"]["none"]["computed_tokens"] for r in rest)
    within = [m for m in modes if sum(r["modes"][m]["computed_tokens"] for r in rest) <= (1 + COST_CAP) * none_tokens]
    scores = {m: _mean([_seeds_mean(rs, m, "macro_f1") for d, rs in by_dataset.items() if d != held_out])
              for m in within}
    return max(within, key=lambda m: (scores[m], -DETERMINISTIC.index(m)))


def _lodo(latest: dict[tuple, dict], draws: int, rng: np.random.Generator) -> None:
    """The unfitted default by leave-one-dataset-out: for each dataset, the deterministic mode within the cost
    cap with the best mean macro-F1 over the other datasets (per selection and k), scored on the one left out."""
    configs: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (dataset, selection, k, _seed), r in latest.items():
        configs[(selection, k)][dataset].append(r)
    rows = []
    for (selection, k), by_dataset in sorted(configs.items()):
        modes = [m for m in DETERMINISTIC if all(m in r["modes"] for runs in by_dataset.values() for r in runs)]
        losses = 0
        for held_out, runs in sorted(by_dataset.items()):
            pick = _lodo_pick(by_dataset, held_out, modes)
            point, low, high = seed_paired_difference(runs, pick, "none", draws, rng) if pick != "none" else (0, 0, 0)
            losses += point < 0
            rows.append([selection, k, held_out, pick, f"{_seeds_mean(runs, pick, 'macro_f1'):.3f}",
                         f"{_seeds_mean(runs, 'none', 'macro_f1'):.3f}", f"{point:+.3f} [{low:+.3f}, {high:+.3f}]",
                         f"{_seeds_mean(runs, 'auto-unfitted', 'macro_f1'):.3f}"])
        rows.append([selection, k, "", f"loses to none on {losses} of {len(by_dataset)}", "", "", "", ""])
    print_table(["selection", "k", "dataset", "chosen on the others", "its macro-F1", "none", "minus none [95%]",
                 "auto-unfitted"], rows, "### Unfitted default, leave-one-dataset-out")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=list(ALL_DATASETS))
    parser.add_argument("--selection", nargs="+", default=["knn", "random"])
    parser.add_argument("--k", nargs="+", type=int, default=[4, 8],
                        help="the first on every dataset, the others on --more-k-datasets")
    parser.add_argument("--more-k-datasets", nargs="+", default=list(K8_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--fit-size", type=int, default=400, help="held-back examples of the fit (its train_size)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reference-knn", action="store_true",
                        help="also run domain-ref on kNN sets (20 prompts per input: ~5x none's engine time)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--time-limit-s", type=float, help="stop starting new configurations after this long")
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, nargs="+", help="only summarise earlier results")
    parser.add_argument("--resume", type=Path, nargs="+",
                        help="results of an earlier run: its configurations (of --selection) are kept, not rerun")
    add_engine_arguments(parser)
    args = parser.parse_args()
    if "none" not in args.modes or args.modes[0] != "none":
        args.modes = ["none", *[m for m in args.modes if m != "none"]]
    return args


def main() -> None:
    args = parse_args()
    if args.table:
        summarise(read_rows(args.table), args.bootstrap)
        return
    # Rows carry every item's probabilities: written without indentation.
    run_benchmark(args, "calibration-auto", evaluate, lambda rows: summarise(rows, args.bootstrap), indent=None)


if __name__ == "__main__":
    main()
