"""Accuracy against prompt tokens: fixed demonstration counts versus the meta-controller.

    python -m bench.controller_curve --datasets sst2 trec agnews subj --fixed-k 0 1 2 4 8 16 \\
        --train-size 400 --n-test 200 --budgets 0.3 0.5

For each dataset it creates a task through the HTTP API (pool: shuffled training examples), trains the task's
meta-controller (candidate counts = --fixed-k), then classifies the test items at every fixed count, with
`demos: "auto"` and no budget, and with `demos: "auto"` under budgets set as fractions of the best fixed
count's tokens. It prints a table, writes it with a PNG of the curves under bench/results/, and states the
token saving at the best fixed count's accuracy.

Transfer to another model: keep the service's data (--data-dir), then run again with --model (a local model
folder, e.g. one made by `iclserve prepare-model --gguf`) and --reuse-controller, which evaluates the tasks and
controllers already stored there instead of creating and training them:

    python -m bench.controller_curve --data-dir /tmp/curve --datasets trec sst2
    python -m bench.controller_curve --data-dir /tmp/curve --datasets trec sst2 --reuse-controller \\
        --model ~/.cache/iclserve/models/gemma-3-270m-q4_k_m
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.controller_offline import describe_saving, plot, saving_at_best_fixed
from bench.harness.cli import argument_parser
from bench.harness.datasets import Dataset, load_dataset, task_name
from bench.harness.figures import accuracy, macro_f1_seen
from bench.harness.results import add_out_argument, results_path, write_json
from bench.harness.server import add_server_arguments, dataset_task, served_from
from bench.harness.tables import print_table
from iclclient import APIError, Client, JobFailed


def run(client: Client, name: str, data: Dataset, rows: list[dict], batch: int, demos: int | str,
        budget_per_input: float | None = None) -> dict:
    client.reset_prefix_cache()
    gold, predicted, tokens, ks = [], [], 0, []
    began = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        budget = int(budget_per_input * len(chunk)) if budget_per_input is not None else None
        out = client.predict(name, data.inputs(chunk), demos=demos, calibration="none", max_prompt_tokens=budget)
        gold += [row["label"] for row in chunk]
        predicted += [p["label"] for p in out["predictions"]]
        ks += [p["k"] for p in out["predictions"]]
        tokens += out["usage"]["prompt_tokens"]
    n = len(rows)
    # macro-F1 over the labels among the gold and predicted ones, as this benchmark has always reported it.
    return {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1_seen(gold, predicted),
            "prompt_tokens_per_input": tokens / n, "mean_k": sum(ks) / n, "wall_s": time.perf_counter() - began}


def train(client: Client, name: str, candidate_k: list[int], train_size: int, seed: int) -> dict:
    job_id = client.train_controller(name, candidate_k, train_size, seed=seed)
    try:
        return client.wait_for_job(job_id, poll_s=5)["result"]
    except JobFailed as exc:
        raise SystemExit(f"controller training failed: {exc}") from exc


def task_for(client: Client, data: Dataset, args: argparse.Namespace) -> tuple[str, dict]:
    """The dataset's task and its controller: created and trained, or (--reuse-controller) the stored ones."""
    if args.reuse_controller:
        name = task_name(data.name)
        try:
            return name, client.get_controller(name)
        except APIError as exc:
            raise SystemExit(f"--reuse-controller: {exc.message}") from exc
    name = dataset_task(client, data, data.train[:args.pool_size + args.train_size])
    return name, train(client, name, args.fixed_k, args.train_size, args.seed)


def run_dataset(client: Client, name: str, args: argparse.Namespace) -> dict:
    data = load_dataset(name, args.seed)
    task, summary = task_for(client, data, args)
    rows = data.test[:args.n_test]
    per_dataset = [{"setting": f"k={k}", **run(client, task, data, rows, args.batch, demos=k)} for k in args.fixed_k]
    per_dataset.append({"setting": "auto", **run(client, task, data, rows, args.batch, demos="auto")})
    best = max(per_dataset[:len(args.fixed_k)], key=lambda r: r["accuracy"])
    for share in args.budgets:
        per_dataset.append({"setting": f"auto, budget {share:.0%} of best fixed",
                            **run(client, task, data, rows, args.batch, demos="auto",
                                  budget_per_input=share * best["prompt_tokens_per_input"])})
    for r in per_dataset:
        r["dataset"] = name
        print(json.dumps(r), flush=True)
    return {"dataset": name, "model": args.model_id, "controller": summary, "rows": per_dataset,
            "saving": saving_at_best_fixed(per_dataset)}


def print_results(results: list[dict]) -> None:
    for item in results:
        trained_with = item["controller"]["metadata"]["model"]
        print_table(["setting", "accuracy", "macro-F1", "prompt tok/input", "mean k"],
                    ([r["setting"], f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}",
                      f"{r['prompt_tokens_per_input']:.0f}", f"{r['mean_k']:.2f}"] for r in item["rows"]),
                    f"{item['dataset']} on {item['model']} (controller trained with {trained_with}): "
                    f"{describe_saving(item['saving'])}")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    add_server_arguments(parser)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "agnews", "subj"])
    parser.add_argument("--fixed-k", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.5],
                        help="budgets as fractions of the most accurate fixed count's tokens per input")
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="the started service's data directory (default: temporary)")
    parser.add_argument("--model", help="local model folder the started service serves (default: SmolLM2)")
    parser.add_argument("--reuse-controller", action="store_true",
                        help="evaluate the tasks and controllers already in --data-dir; create and train nothing")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results: list[dict] = []
    # Automatic fits off: the benchmark trains the controller itself, with its own candidate counts.
    with served_from(args, data_dir=args.data_dir, model=args.model, auto_fit=False) as service, \
            service.client(timeout=7200) as client:
        args.model_id = client.models()[0]["id"]
        path = results_path(args.out, f"controller-{args.model_id}")
        for name in args.datasets:
            results.append(run_dataset(client, name, args))
            write_json(path, results)  # after each dataset, so a long run that is cut short keeps what it did
            plot(results, path.with_suffix(".png"))
    print_results(results)
    print(f"\nresults: {path}, plot: {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
