"""How many prompt tokens `demos: "auto"` saves, through the service end to end: fit job, then predict.

    python -m bench.counts_http --datasets sst2 trec cr subj mr agnews --n-test 200 --pool-size 1000

Per dataset: the task is created and fitted by the fit job (its default request; its tokens, seconds and the
engine's dtype recorded), then the test items are classified in requests of `--batch` inputs with the default
calibration at every fixed count (`--fixed-k`), and with `demos: "auto"` without a budget and with budgets of
`--budgets` times the reference count's tokens per request. The reference count is the cheapest fixed count
whose accuracy is within a point of the best fixed count's; savings are measured against it. The p50 latency
of `--latency-n` one-input requests is measured for `auto` and the reference count. The prefix cache is emptied
before every configuration.

The fitted cascade is also replayed offline on the fixed-count answers of the same items: for kNN the
cascade's stage prompts are those fixed-count prompts, so the replay must match the service's own answers.

With `--controller-policy`, a second server on the same database serves `auto` with the meta-controller
(`ICL_AUTO_COUNT_POLICY=controller`), so that both policies run on the same fits. Results go to
bench/results/counts-*.json, with a plot of accuracy against prompt tokens per dataset.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.datasets import load_dataset
from bench.harness.figures import label_figures
from bench.harness.host import describe_host, host_line
from bench.harness.results import add_out_argument, read_json, results_path, write_json
from bench.harness.server import Service, add_server_arguments, dataset_task, served_from
from bench.harness.tables import print_table
from controller.cascade import HEAD_STAGE, Cascade, replay
from iclclient import APIError, Client

Task = tuple[str, list, list[str], list[str]]  # the task's name, the test inputs, their gold labels, the labels


def classify(client: Client, name: str, inputs: list, labels: list[str], gold: list[str], batch: int,
             demos: int | str, budget_per_input: float | None = None) -> dict:
    """One configuration over the items, in requests of `batch` inputs: figures, and each item's answer."""
    client.reset_prefix_cache()
    predictions, prompt_tokens, computed, began = [], 0, 0, time.perf_counter()
    policies = set()
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        budget = int(budget_per_input * len(chunk)) if budget_per_input is not None else None
        try:
            body = client.predict(name, chunk, demos=demos, max_prompt_tokens=budget)
        except APIError as exc:  # a budget below the first stage's prompts: the service says so
            return {"demos": demos, "budget_per_input": budget_per_input, "error": str(exc)}
        predictions += body["predictions"]
        prompt_tokens += body["usage"]["prompt_tokens"]
        computed += body["usage"]["computed_tokens"]
        policies.add(body["demos_policy"])
    n = len(inputs)
    predicted = [p["label"] for p in predictions]
    stages = [len(p["stages"]) for p in predictions]
    return {
        "demos": demos, "budget_per_input": budget_per_input, "n": n, "policy": sorted(policies),
        **label_figures(gold, predicted, labels),
        "prompt_tokens_per_input": prompt_tokens / n,
        "computed_tokens_per_input": computed / n,
        "mean_stages": float(np.mean(stages)),
        "answered_at_k": {str(k): int(c) for k, c in zip(*np.unique([p["k"] for p in predictions],
                                                                      return_counts=True), strict=True)},
        "wall_s": round(time.perf_counter() - began, 1),
        "items": [{"label": p["label"], "probs": [p["probs"][label] for label in labels],
                   "uncalibrated": [p["uncalibrated_probs"][label] for label in labels],
                   "prompt_tokens": p["prompt_tokens"], "stages": p["stages"]} for p in predictions],
    }


def test_items(name: str, n_test: int, seed: int) -> tuple[list, list[str]]:
    """The benchmark's test items of a dataset: inputs (as the task's template reads them) and gold labels."""
    data = load_dataset(name, seed)
    rows = data.test[:n_test]
    return data.inputs(rows), [r["label"] for r in rows]


def one_input_latency(client: Client, name: str, inputs: list, demos: int | str) -> float:
    """Median milliseconds of one-input requests."""
    client.reset_prefix_cache()
    times = []
    for value in inputs:
        began = time.perf_counter()
        client.predict(name, [value], demos=demos)
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)


def reference_count(fixed: dict[int, dict]) -> int:
    """The cheapest fixed count within a point of the best fixed count's accuracy."""
    best = max(r["accuracy"] for r in fixed.values())
    return min((k for k, r in fixed.items() if r["accuracy"] >= best - 0.01),
               key=lambda k: fixed[k]["prompt_tokens_per_input"])


def replayed(cascade: dict, fixed: dict[int, dict], labels: list[str], gold: list[str]) -> dict:
    """The fitted cascade replayed on the fixed-count answers of the same items (a cascade that starts with the
    embedding head has no fixed-count answers to replay: empty)."""
    if cascade["stages"] and cascade["stages"][0] == HEAD_STAGE:
        return {}
    counts = sorted(fixed)
    probs = np.array([[item["probs"] for item in fixed[k]["items"]] for k in counts]).transpose(1, 0, 2)
    tokens = np.array([[item["prompt_tokens"] for item in fixed[k]["items"]] for k in counts]).T
    played = replay(Cascade(tuple(cascade["stages"]), tuple(cascade["thresholds"])), probs, tokens, counts)
    gold_index = np.array([labels.index(g) for g in gold])
    return {**played.figures(gold_index, len(labels)),
            "answers": [labels[i] for i in played.answers]}


def summarise(dataset: str, record: dict) -> dict:
    fixed = {int(k): r for k, r in record["fixed"].items()}
    ref = reference_count(fixed)
    best = max(fixed.values(), key=lambda r: r["accuracy"])
    best_f1 = max(r["macro_f1"] for r in fixed.values())
    ref_tokens = fixed[ref]["prompt_tokens_per_input"]
    rows = []
    for label, run in record["auto"].items():
        if "error" in run:
            continue
        rows.append({"dataset": dataset, "auto": label, "accuracy": run["accuracy"], "macro_f1": run["macro_f1"],
                     "prompt_tokens": run["prompt_tokens_per_input"],
                     "computed_tokens": run["computed_tokens_per_input"],
                     "saving": 1 - run["prompt_tokens_per_input"] / ref_tokens,
                     "accuracy_vs_best": run["accuracy"] - best["accuracy"],
                     "macro_f1_vs_best": run["macro_f1"] - best_f1})
    return {"reference_k": ref, "reference_tokens": ref_tokens, "best_k": best["demos"],
            "best_accuracy": best["accuracy"], "best_macro_f1": best_f1, "rows": rows}


def print_tables(records: dict[str, dict]) -> None:
    counts = sorted({int(k) for r in records.values() for k in r["fixed"]})
    rows = []
    for name, record in records.items():
        fixed = {int(k): r for k, r in record["fixed"].items()}
        rows.append([name, *(f"{fixed[k]['accuracy']:.3f} / {fixed[k]['macro_f1']:.3f} / "
                             f"{fixed[k]['prompt_tokens_per_input']:.0f}" if k in fixed else "-" for k in counts),
                     summarise(name, record)["reference_k"]])
    print_table(["dataset", *(f"k={k}" for k in counts), "ref k"], rows)
    rows, by_label = [], {}
    for name, record in records.items():
        for row in summarise(name, record)["rows"]:
            by_label.setdefault(row["auto"], []).append(row)
            rows.append([name, row["auto"], f"{row['accuracy']:.3f}", f"{row['macro_f1']:.3f}",
                         f"{row['prompt_tokens']:.0f}", f"{row['computed_tokens']:.0f}", f"{row['saving']:+.1%}",
                         f"{row['accuracy_vs_best']:+.3f}", f"{row['macro_f1_vs_best']:+.3f}"])
    for label, runs in by_label.items():
        mean = {key: np.mean([r[key] for r in runs]) for key in runs[0] if key not in ("dataset", "auto")}
        rows.append(["**mean**", label, f"{mean['accuracy']:.3f}", f"{mean['macro_f1']:.3f}",
                     f"{mean['prompt_tokens']:.0f}", f"{mean['computed_tokens']:.0f}", f"{mean['saving']:+.1%}",
                     f"{mean['accuracy_vs_best']:+.3f}", f"{mean['macro_f1_vs_best']:+.3f}"])
    print_table(["dataset", "auto", "accuracy", "macro-F1", "prompt tok", "computed tok", "saving vs ref", "acc − best",
                 "F1 − best"], rows)


def plot(records: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(records), figsize=(4 * len(records), 3.6), squeeze=False)
    for ax, (dataset, record) in zip(axes[0], records.items(), strict=True):
        fixed = {int(k): r for k, r in record["fixed"].items()}
        ks = sorted(fixed)
        ax.plot([fixed[k]["prompt_tokens_per_input"] for k in ks], [fixed[k]["accuracy"] for k in ks], "o-",
                color="grey", label="fixed k")
        for k in ks:
            ax.annotate(str(k), (fixed[k]["prompt_tokens_per_input"], fixed[k]["accuracy"]), fontsize=7)
        for label, run in record["auto"].items():
            if "error" in run:
                continue
            ax.plot(run["prompt_tokens_per_input"], run["accuracy"], "*" if "cascade" in label else "s",
                    label=label, markersize=8)
        ax.set_xscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("prompt tokens per input")
        ax.set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def fit(client: Client, name: str, fit_size: int | None) -> dict:
    """The fit job (its default request) and what it chose and cost."""
    fitted = client.wait_for_job(client.train_controller(name, train_size=fit_size), poll_s=2.0)["result"]
    return {key: fitted[key] for key in ("cost", "train_size", "candidate_k", "cascade", "validation")}


def measure_dataset(args: argparse.Namespace, client: Client, name: str) -> tuple[Task, dict]:
    """Fit the dataset's task, then every fixed count, auto with and without budgets, the replayed cascade and
    one-input latency."""
    data = load_dataset(name, args.seed)
    task = dataset_task(client, data, data.train[:args.pool_size])
    inputs, gold = test_items(name, args.n_test, args.seed)
    labels = client.get_task(task)["labels"]
    record = {"fit": fit(client, task, args.fit_size), "labels": labels, "fixed": {}, "auto": {}}
    print(json.dumps({"dataset": name, "fit": record["fit"]}), flush=True)
    for k in args.fixed_k:
        record["fixed"][str(k)] = classify(client, task, inputs, labels, gold, args.batch, k)
        print(name, "k", k, {m: record["fixed"][str(k)][m] for m in
                             ("accuracy", "macro_f1", "prompt_tokens_per_input")}, flush=True)
    fixed = {int(k): r for k, r in record["fixed"].items()}
    ref = reference_count(fixed)
    ref_tokens = fixed[ref]["prompt_tokens_per_input"]
    for label, share in {"cascade": None, **{f"cascade, budget {b:.0%}": b for b in args.budgets}}.items():
        record["auto"][label] = classify(client, task, inputs, labels, gold, args.batch, "auto",
                                         share * ref_tokens if share is not None else None)
        print(name, label, {m: record["auto"][label].get(m) for m in
                            ("accuracy", "macro_f1", "prompt_tokens_per_input", "mean_stages", "error")}, flush=True)
    played = replayed(record["fit"]["cascade"], fixed, labels, gold)
    service_answers = [item["label"] for item in record["auto"]["cascade"]["items"]]
    record["replay"] = {**{k: v for k, v in played.items() if k != "answers"},
                        "same_answers_as_service": float(np.mean(
                            [a == b for a, b in zip(played["answers"], service_answers, strict=True)]))
                        if played else None}
    few = inputs[:args.latency_n]
    record["latency_ms_p50"] = {"auto": one_input_latency(client, task, few, "auto"),
                                f"k={ref}": one_input_latency(client, task, few, ref)}
    print(name, "replay", record["replay"], "latency", record["latency_ms_p50"], flush=True)
    return (task, inputs, gold, labels), record


def controller_policy(client: Client, tasks: dict[str, Task], records: dict[str, dict], batch: int) -> None:
    """`auto` served by the meta-controller on the same fits, without a budget and at half the reference's."""
    for name, (task, inputs, gold, labels) in tasks.items():
        record = records[name]
        fixed = {int(k): r for k, r in record["fixed"].items()}
        ref_tokens = fixed[reference_count(fixed)]["prompt_tokens_per_input"]
        for label, share in {"controller": None, "controller, budget 50%": 0.5}.items():
            record["auto"][label] = classify(client, task, inputs, labels, gold, batch, "auto",
                                             share * ref_tokens if share is not None else None)
            print(name, label, {m: record["auto"][label].get(m) for m in
                                ("accuracy", "macro_f1", "prompt_tokens_per_input", "error")}, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "cr", "subj", "mr", "agnews"])
    parser.add_argument("--fixed-k", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.75, 1.0])
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--latency-n", type=int, default=20)
    parser.add_argument("--fit-size", type=int, help="the fit's held-back examples (default: the service's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="a local model folder (default: the service's default model)")
    parser.add_argument("--controller-policy", action="store_true",
                        help="also serve auto with the meta-controller, on the same fits")
    add_server_arguments(parser, url=False)
    add_out_argument(parser)
    parser.add_argument("--table", type=Path, help="only print the tables of an earlier results file")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.table:
        print_tables(read_json(args.table)["datasets"])
        return
    data_dir = Path(tempfile.mkdtemp(prefix="iclbench-counts-"))
    path = results_path(args.out, "counts")
    out = {"host": describe_host(), "args": {k: str(v) for k, v in vars(args).items()}, "datasets": {}}
    records: dict[str, dict] = out["datasets"]
    tasks: dict[str, Task] = {}

    def service(env: dict[str, str] | None = None) -> AbstractContextManager[Service]:
        return served_from(args, data_dir=data_dir, model=args.model, auto_fit=False, env=env)

    with service() as started, started.client() as client:
        out["model"] = client.models()[0]["id"]
        for name in args.datasets:
            tasks[name], records[name] = measure_dataset(args, client, name)
            write_json(path, out)
    if args.controller_policy:  # a second server on the same database
        with service({"ICL_AUTO_COUNT_POLICY": "controller"}) as started, started.client() as client:
            controller_policy(client, tasks, records, args.batch)
            write_json(path, out)
    for record in records.values():
        record["summary"] = summarise("", record)
    write_json(path, out)
    figure = path.with_suffix(".png")
    plot(records, figure)
    print_tables(records)
    print(f"\nresults: {path}\nplot: {figure}\n{host_line(out['host'])}")


if __name__ == "__main__":
    main()
