"""Evaluate shared datasets through the HTTP API: accuracy, macro-F1, prompt tokens and latency per input.

    python -m bench.eval_http --datasets sst2 agnews trec --k 0 4 8 --selection knn random \\
        --calibration none contextual domain --n-test 200 --pool-size 1000

Without --url it starts `iclserve serve` on a free local port with a temporary data directory, and stops it
at the end (`--engine fake`: the fake engine, to try the benchmark out). With --fit, each selection's modes run
first on the unfitted task, then the task is fitted for that selection (the fit job, its cost recorded) and
"auto" runs again, fitted:

    python -m bench.eval_http --datasets sst2 trec rte --k 4 --selection knn random \\
        --calibration none contextual domain batch auto --fit --fit-k 0 4 --fit-size 300 --n-test 200

Results are printed as a Markdown table and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness.cli import argument_parser
from bench.harness.datasets import Dataset, load_dataset
from bench.harness.figures import accuracy, macro_f1_seen
from bench.harness.results import ResultsLog, add_out_argument, read_rows, results_path
from bench.harness.server import add_server_arguments, dataset_task, served_from
from bench.harness.tables import print_table
from iclclient import Client


def evaluate(client: Client, name: str, data: Dataset, rows: list[dict], k: int, selection: str,
             calibration: str, batch: int, seed: int) -> dict:
    # Each configuration starts from an empty prefix cache: otherwise a run re-reads the prompts of the
    # run before it (same inputs), and its computed tokens and latency look better than they are.
    client.reset_prefix_cache()
    gold, predicted, latencies, got, usage = [], [], [], Counter(), Counter()
    began = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        t0 = time.perf_counter()
        body = client.predict(name, data.inputs(chunk), demos=k, selection=selection, calibration=calibration,
                              seed=seed)
        latencies.append((time.perf_counter() - t0) / len(chunk))
        gold += [row["label"] for row in chunk]
        predicted += [p["label"] for p in body["predictions"]]
        got.update(p["calibration"] for p in body["predictions"])
        usage.update({key: body["usage"].get(key, 0) for key in
                      ("prompt_tokens", "calibration_tokens", "total_tokens", "cached_tokens")})
    n = len(rows)
    return {
        "k": k, "selection": selection, "calibration": calibration, "n": n,
        "accuracy": accuracy(gold, predicted),
        # Over the labels among the gold and predicted ones (this table's meaning since its first run).
        "macro_f1": macro_f1_seen(gold, predicted),
        "prompt_tokens_per_input": usage["prompt_tokens"] / n,
        "calibration_tokens_per_input": usage["calibration_tokens"] / n,
        "computed_tokens_per_input": (usage["total_tokens"] - usage["cached_tokens"]) / n,
        "latency_ms_per_input_median_batch": 1000 * statistics.median(latencies),
        "wall_s": time.perf_counter() - began,
        "calibration_got": dict(got),
    }


def fit(client: Client, name: str, selection: str, candidate_k: list[int] | None, train_size: int | None,
        seed: int) -> dict:
    """Fit the task for `selection` (controller and calibration) and wait: what the fit chose and cost."""
    job = client.wait_for_job(client.train_controller(name, candidate_k=candidate_k, train_size=train_size,
                                                      selection=selection, seed=seed), poll_s=2.0)
    result = job["result"]
    return {"selection": selection, "candidate_k": result["candidate_k"], "train_size": result["train_size"],
            "cost": result["cost"],
            "methods": {k: c["method"] for k, c in result["calibration"]["counts"].items()}}


def counts_of(args: argparse.Namespace, selection: str) -> Iterator[int]:
    """The counts a selection runs at: k = 0 has no selection, so only under the first one."""
    return (k for k in args.k if k or selection == args.selection[0])


def run_dataset(args: argparse.Namespace, client: Client, model: str, name: str, log: ResultsLog) -> None:
    data = load_dataset(name, args.seed)
    task = dataset_task(client, data, data.train[:args.pool_size])
    rows = data.test[:args.n_test]

    def record(k: int, selection: str, calibration: str, fitted: dict | None) -> None:
        row: dict[str, Any] = {"dataset": name, "model": model, "fitted": fitted is not None,
                               **evaluate(client, task, data, rows, k, selection, calibration, args.batch,
                                          args.seed)}
        log.append(row if fitted is None else {**row, "fit": fitted})

    for selection in args.selection:
        for k in counts_of(args, selection):
            for calibration in args.calibration:
                record(k, selection, calibration, None)
        if args.fit and "auto" in args.calibration:
            fitted = fit(client, task, selection, args.fit_k, args.fit_size, args.seed)
            print(json.dumps({"dataset": name, "fit": fitted}), flush=True)
            for k in counts_of(args, selection):
                record(k, selection, "auto", fitted)


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    add_server_arguments(parser)
    parser.add_argument("--api-key")
    parser.add_argument("--datasets", nargs="+", default=["sst2"])
    parser.add_argument("--k", nargs="+", type=int, default=[0, 4, 8])
    parser.add_argument("--selection", nargs="+", default=["knn", "random"])
    parser.add_argument("--calibration", nargs="+", default=["none", "contextual", "domain"])
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", action="store_true",
                        help="per selection: the modes unfitted, then fit the task and run 'auto' again, fitted")
    parser.add_argument("--fit-k", type=int, nargs="+", help="the fit's candidate_k (default: the service's)")
    parser.add_argument("--fit-size", type=int, help="the fit's held-back examples (default: the service's)")
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, nargs="+", help="only print the table of earlier results or logs")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.table:
        print_results([r for r in read_rows(args.table) if "calibration" in r])  # not a log's fit lines
        return
    log = ResultsLog(results_path(args.out, "eval"))
    with served_from(args, auto_fit=not args.fit) as service, service.client(api_key=args.api_key) as client:
        model = client.models()[0]["id"]
        for name in args.datasets:
            run_dataset(args, client, model, name, log)
    print_results(log.rows)
    print(f"\nresults: {log.path}")


def print_results(results: list[dict]) -> None:
    header = ["dataset", "k", "selection", "calibration", "n", "accuracy", "macro-F1", "prompt tok/input",
              "calib tok/input", "computed tok/input", "latency ms/input"]
    print_table(header, ([r["dataset"], r["k"], r["selection"] if r["k"] else "-",
                          r["calibration"] + (" (fitted)" if r.get("fitted") else ""), r["n"],
                          f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", f"{r['prompt_tokens_per_input']:.0f}",
                          f"{r['calibration_tokens_per_input']:.0f}", f"{r['computed_tokens_per_input']:.0f}",
                          f"{r['latency_ms_per_input_median_batch']:.0f}"] for r in results))


if __name__ == "__main__":
    main()
