"""Accuracy against prompt tokens: fixed demonstration counts versus the meta-controller.

    python bench/controller_curve.py --datasets sst2 trec agnews subj --fixed-k 0 1 2 4 8 16 \\
        --train-size 400 --n-test 200 --budgets 0.3 0.5

For each dataset it creates a task through the HTTP API (pool: shuffled training examples), trains the task's
meta-controller (candidate counts = --fixed-k), then classifies the test items at every fixed count, with
`demos: "auto"` and no budget, and with `demos: "auto"` under budgets set as fractions of the best fixed
count's tokens. It prints a table, writes it with a PNG of the curves under bench/results/, and states the
token saving at the best fixed count's accuracy.

Transfer to another model: keep the service's data (--data-dir), then run again with --model (a local model
folder, e.g. one made by `iclserve prepare-model --gguf`) and --reuse-controller, which evaluates the tasks and
controllers already stored there instead of creating and training them:

    python bench/controller_curve.py --data-dir /tmp/curve --datasets trec sst2
    python bench/controller_curve.py --data-dir /tmp/curve --datasets trec sst2 --reuse-controller \
        --model ~/.cache/iclserve/models/gemma-3-270m-q4_k_m
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from sklearn.metrics import f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from controller_offline import describe_saving, plot, saving_at_best_fixed  # noqa: E402
from eval_http import DEFAULT_TEMPLATE, REPO, TEMPLATES, input_of, load, service, setup_task  # noqa: E402

from iclclient import APIError, Client, JobFailed  # noqa: E402


def run(client: Client, name: str, template: str, rows: list[dict], batch: int, demos: int | str,
        budget_per_input: float | None = None) -> dict:
    client.reset_prefix_cache()
    gold, predicted, tokens, ks = [], [], 0, []
    began = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        budget = int(budget_per_input * len(chunk)) if budget_per_input is not None else None
        out = client.predict(name, [input_of(r, template) for r in chunk], demos=demos, calibration="none",
                             max_prompt_tokens=budget)
        gold += [row["label"] for row in chunk]
        predicted += [p["label"] for p in out["predictions"]]
        ks += [p["k"] for p in out["predictions"]]
        tokens += out["usage"]["prompt_tokens"]
    n = len(rows)
    return {"accuracy": sum(g == p for g, p in zip(gold, predicted, strict=True)) / n,
            "macro_f1": f1_score(gold, predicted, average="macro"), "prompt_tokens_per_input": tokens / n,
            "mean_k": sum(ks) / n, "wall_s": time.perf_counter() - began}


def train(client: Client, name: str, candidate_k: list[int], train_size: int, seed: int) -> dict:
    job_id = client.train_controller(name, candidate_k, train_size, seed=seed)
    try:
        return client.wait_for_job(job_id, poll_s=5)["result"]
    except JobFailed as exc:
        raise SystemExit(f"controller training failed: {exc}") from exc


def save_results(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def run_dataset(client: Client, dataset: str, args: argparse.Namespace) -> dict:
    if args.reuse_controller:
        name, template = f"bench-{dataset.replace('_', '-')}", TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
        try:
            summary = client.get_controller(name)
        except APIError as exc:
            raise SystemExit(f"--reuse-controller: {exc.message}") from exc
    else:
        name, template = setup_task(client, dataset, args.pool_size + args.train_size, args.seed)
        summary = train(client, name, args.fixed_k, args.train_size, args.seed)
    test = load(dataset, "test")
    random.Random(args.seed).shuffle(test)
    rows = test[:args.n_test]
    per_dataset = [{"setting": f"k={k}", **run(client, name, template, rows, args.batch, demos=k)}
                   for k in args.fixed_k]
    per_dataset.append({"setting": "auto", **run(client, name, template, rows, args.batch, demos="auto")})
    best = max(per_dataset[:len(args.fixed_k)], key=lambda r: r["accuracy"])
    for share in args.budgets:
        per_dataset.append({"setting": f"auto, budget {share:.0%} of best fixed",
                            **run(client, name, template, rows, args.batch, demos="auto",
                                  budget_per_input=share * best["prompt_tokens_per_input"])})
    for r in per_dataset:
        r["dataset"] = dataset
        print(json.dumps(r), flush=True)
    return {"dataset": dataset, "model": args.model_id, "controller": summary, "rows": per_dataset,
            "saving": saving_at_best_fixed(per_dataset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--datasets", nargs="+", default=["sst2", "trec", "agnews", "subj"])
    parser.add_argument("--fixed-k", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.5],
                        help="budgets as fractions of the most accurate fixed count's tokens per input")
    parser.add_argument("--train-size", type=int, default=400)
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--data-dir", type=Path, help="the started service's data directory (default: temporary)")
    parser.add_argument("--model", help="local model folder the started service serves (default: SmolLM2)")
    parser.add_argument("--reuse-controller", action="store_true",
                        help="evaluate the tasks and controllers already in --data-dir; create and train nothing")
    args = parser.parse_args()

    results: list[dict] = []
    with service(args.url, args.data_dir, args.model) as url, Client(url, timeout=7200) as client:
        args.model_id = client.models()[0]["id"]
        path = args.out / f"controller-{args.model_id}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        for dataset in args.datasets:
            results.append(run_dataset(client, dataset, args))
            save_results(path, results)  # after each dataset, so a long run that is cut short keeps what it did
            plot(results, path.with_suffix(".png"))
    for item in results:
        trained_with = item["controller"]["metadata"]["model"]
        print(f"\n{item['dataset']} on {item['model']} (controller trained with {trained_with}): "
              f"{describe_saving(item['saving'])}")
        print("| setting | accuracy | macro-F1 | prompt tok/input | mean k |\n|---|---|---|---|---|")
        for r in item["rows"]:
            print(f"| {r['setting']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['prompt_tokens_per_input']:.0f} "
                  f"| {r['mean_k']:.2f} |")
    print(f"\nresults: {path}, plot: {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
