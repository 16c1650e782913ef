"""Selective annotation: which examples to label, judged by the accuracy they buy.

    python -m bench.annotation --datasets sst2 trec agnews subj --seeds 0 1 2 --pool-size 3000 \\
        --budgets 18 100 --methods random votek ideal votek_two_stage --n-test 100

For each dataset and seed: a pool of --pool-size unlabeled training examples; each method picks --budgets
of them (timed); the picks get their true labels and become the demonstration pool; the test items are
classified with kNN demonstrations (k = min(--k, budget)), without calibration and with domain-context
calibration (2 strings per demonstration set, kNN sets included). Two-stage vote-k labels vote-k's first 10,
prompts the model with the nearest of them to score its confidence on the whole pool, then picks the rest
across confidence buckets (`controller.annotation`); its selection time includes that engine work (one pass
per pool, shared by the budgets, counted in each).
`--scorer transformers --device cuda` runs where a GPU but no vLLM is available. `--table FILE...` prints the
summary of earlier results.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.figures import label_figures
from bench.harness.host import describe_host
from bench.harness.inprocess import (
    Embeddings,
    TaskData,
    add_engine_arguments,
    embedded_task,
    labeled_pool,
    run_benchmark,
    task_data,
)
from bench.harness.results import ResultsLog, add_out_argument, read_rows
from bench.harness.tables import print_table
from controller.annotation import (
    ideal,
    model_confidence,
    random_selection,
    votek,
    votek_first_stage,
    votek_second_stage,
)
from controller.counts import TaskDefaults
from controller.domain import DomainSettings
from controller.predictor import PredictOptions, Predictor

METHODS = ("random", "votek", "ideal", "votek_two_stage")
CALIBRATED = DomainSettings(samples=2, calibrate_knn=True)


async def classify(builder, queries, vectors, labels, k: int, calibration: str, words, seed: int, scorer,
                   batch: int) -> list[str]:
    options = PredictOptions(demos=k, selection="knn", calibration=calibration, domain=CALIBRATED, seed=seed)
    predictor = Predictor.from_options(builder, labels, options, TaskDefaults(k), words=lambda: words)
    predicted: list[str] = []
    for start in range(0, len(queries), batch):
        plan = predictor.plan(queries[start:start + batch], vectors[start:start + batch])
        predicted += [p.label for p in (await predictor.run(plan, scorer)).predictions]
    return predicted


async def two_stage(data, pool_rows, pool_vectors, budget: int, args, scorer, seed: int,
                    passes: dict[tuple[int, ...], tuple[np.ndarray, float]]) -> tuple[list[int], float]:
    """Vote-k's first picks get their labels; the model, prompted with the nearest of them, scores its
    confidence on the rest of the pool; the second stage picks across confidence buckets. The first stage is
    the same for every budget of at least 10, so its pass runs once per pool (``passes``); returns the picks
    and the seconds of an earlier pass reused here (0 when this call ran it), for the caller to count."""
    first = votek_first_stage(pool_vectors, budget)
    reused = tuple(first) in passes
    if not reused:
        began = time.perf_counter()
        labeled = labeled_pool(data, [pool_rows[i] for i in first], pool_vectors[first])
        confidence = np.full(len(pool_rows), np.inf)
        picked = set(first)
        rest = [i for i in range(len(pool_rows)) if i not in picked]
        confidence[rest] = await model_confidence(
            data.builder(scorer, labeled), [data.query(pool_rows[i]) for i in rest], pool_vectors[rest],
            data.labels, min(args.confidence_demos, len(first)), seed, scorer, chunk=args.batch)
        passes[tuple(first)] = (confidence, time.perf_counter() - began)
    confidence, pass_s = passes[tuple(first)]
    return votek_second_stage(pool_vectors, first, confidence, budget, seed=seed), pass_s if reused else 0.0


async def select(args: argparse.Namespace, scorer, data: TaskData, pool_vectors: np.ndarray, method: str,
                 budget: int, seed: int, passes: dict[tuple[int, ...], tuple[np.ndarray, float]]
                 ) -> tuple[list[int], float]:
    """``method``'s picks from the pool and the seconds they took (two-stage vote-k's engine pass included)."""
    began, reused_s = time.perf_counter(), 0.0
    if method == "votek":
        picks = votek(pool_vectors, budget)
    elif method == "ideal":
        picks = ideal(pool_vectors, budget, seed=seed)
    elif method == "random":
        picks = random_selection(len(data.pool_rows), budget, seed)
    else:
        picks, reused_s = await two_stage(data, data.pool_rows, pool_vectors, budget, args, scorer, seed, passes)
    return picks, time.perf_counter() - began + reused_s


async def evaluate(args: argparse.Namespace, scorer, embeddings: Embeddings, log: ResultsLog) -> None:
    for seed in args.seeds:
        for dataset in args.datasets:
            task = embedded_task(task_data(dataset, args.pool_size, args.n_test, seed), embeddings)
            data, pool_rows, pool_vectors = task.data, task.data.pool_rows, task.pool_vectors
            passes: dict[tuple[int, ...], tuple[np.ndarray, float]] = {}
            for budget in args.budgets:
                for method in args.methods:
                    picks, selection_s = await select(args, scorer, data, pool_vectors, method, budget, seed, passes)
                    labeled = labeled_pool(data, [pool_rows[i] for i in picks], pool_vectors[picks])
                    builder = data.builder(scorer, labeled)
                    k = min(args.k, budget)
                    for calibration in ("none", "domain"):
                        predicted = await classify(builder, task.queries, task.query_vectors, data.labels, k,
                                                   calibration, task.words, seed, scorer, args.batch)
                        log.append({"dataset": dataset, "seed": seed, "budget": budget, "method": method, "k": k,
                                    "calibration": calibration, "selection_s": selection_s, "n": len(task.queries),
                                    "model": scorer.model_name, "scorer": args.scorer,
                                    "dtype": getattr(scorer, "dtype", None),
                                    "host": describe_host(getattr(scorer, "dtype", None)),
                                    "labels_covered": len({pool_rows[i]["label"] for i in picks}),
                                    **label_figures(task.gold, predicted, data.labels)})


def summarise(results: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["budget"], r["calibration"], r["method"], r["dataset"])].append(r)
    datasets = sorted({r["dataset"] for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    rows = []
    for budget in sorted({r["budget"] for r in results}):
        for calibration in ("none", "domain"):
            base: list[float] | None = None
            for method in methods:
                cells = [groups.get((budget, calibration, method, d)) for d in datasets]
                if not any(cells):
                    continue
                accs = [statistics.mean(r["accuracy"] for r in c) if c else float("nan") for c in cells]
                if method == "random":
                    base = accs
                # Relative to random on the same datasets (a method may have run on fewer).
                same = [(a, b) for a, b in zip(accs, base or [], strict=False) if not np.isnan(a) and not np.isnan(b)]
                rel = (f"{100 * (sum(a for a, _ in same) / sum(b for _, b in same) - 1):+.1f}%"
                       if same and method != "random" else "-")
                secs = statistics.median(r["selection_s"] for c in cells if c for r in c)
                seeds = min(len(c) for c in cells if c)
                rows.append([budget, calibration, method, seeds, *(f"{a:.3f}" for a in accs),
                             f"{float(np.nanmean(accs)):.3f}", rel, f"{secs:.2f}"])
    print_table(["budget", "calibration", "method", "seeds", *datasets, "mean", "relative to random", "selection s"],
                rows, "Accuracy (mean over seeds; selection time in seconds, median):")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "agnews", "subj"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budgets", nargs="+", type=int, default=[18, 100])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--pool-size", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--confidence-demos", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, nargs="+")
    add_engine_arguments(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.table:
        summarise(read_rows(args.table))
        return
    run_benchmark(args, "annotation", evaluate, summarise)


if __name__ == "__main__":
    main()
