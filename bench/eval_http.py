"""Evaluate shared datasets through the HTTP API: accuracy, macro-F1, prompt tokens and latency per input.

    python bench/eval_http.py --datasets sst2 agnews trec --k 0 4 8 --selection knn random \\
        --calibration none contextual domain --n-test 200 --pool-size 1000

Without --url it starts `iclserve serve` on a free local port with a temporary data directory, and stops it
at the end. With --fit, each selection's modes run first on the unfitted task, then the task is fitted for that
selection (the fit job, its cost recorded) and "auto" runs again, fitted:

    python bench/eval_http.py --datasets sst2 trec rte --k 4 --selection knn random \
        --calibration none contextual domain batch auto --fit --fit-k 0 4 --fit-size 300 --n-test 200
 Results are printed as a Markdown table and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sklearn.metrics import f1_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from iclclient import Client, ServiceTimeout, ServiceUnreachable  # noqa: E402

DATASETS = Path(os.environ.get("ICL_DATASETS_DIR", REPO.parent / "shared" / "datasets"))

TEMPLATES = {
    "rte": "Premise: {premise}\nHypothesis: {hypothesis}\nLabel: {label}",
}
DEFAULT_TEMPLATE = "Input: {text}\nLabel: {label}"


def load(dataset: str, split: str) -> list[dict]:
    with (DATASETS / dataset / f"{split}.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def manifest_labels(dataset: str) -> list[str]:
    return json.loads((DATASETS / "MANIFEST.json").read_text())[dataset]["labels"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: str, extra_env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(Path(data_dir) / "server.log", "a")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", data_dir],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **extra_env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    with Client(url, timeout=5) as client:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited; see {log.name}")
            try:
                if client.health():
                    return proc, url
            except (ServiceUnreachable, ServiceTimeout, httpx.HTTPError):  # starting: a busy loop may be slow
                pass
            time.sleep(2)
    proc.terminate()
    raise SystemExit("server did not become healthy in 10 minutes")


@contextmanager
def service(url: str | None, data_dir: Path | None = None, model: str | None = None,
            auto_fit: bool = True, env: dict[str, str] | None = None) -> Iterator[str]:
    """The given service's URL, or an `iclserve serve` for the block: on `data_dir` (default: a temporary
    directory), serving `model` (a local model folder; default: the service's default model), fitting tasks
    by itself unless `auto_fit` is off (a benchmark that fits when it chooses), with `env`'s settings."""
    if url is not None:
        yield url
        return
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="iclbench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    # The benchmark's own server: its admin key (to empty the prefix cache) is the one this process uses.
    os.environ.setdefault("ICL_ADMIN_KEY", secrets.token_hex(16))
    env = {"ICL_ADMIN_KEYS": os.environ["ICL_ADMIN_KEY"], "ICL_AUTO_FIT": str(auto_fit).lower(),
           **({"ICL_MODEL": model} if model else {}), **(env or {})}
    proc, started = start_server(str(data_dir), env)
    try:
        yield started
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def save_results(out: Path, prefix: str, results: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def input_of(row: dict, template: str) -> str | dict:
    fields = [f for f in ("text", "premise", "hypothesis") if "{" + f + "}" in template]
    return row[fields[0]] if len(fields) == 1 else {f: row[f] for f in fields}


def setup_task(client: Client, dataset: str, pool_size: int, seed: int) -> tuple[str, str]:
    name = f"bench-{dataset.replace('_', '-')}"
    template = TEMPLATES.get(dataset, DEFAULT_TEMPLATE)
    if name in {t["name"] for t in client.list_tasks()}:
        client.delete_task(name)
    client.create_task(name, manifest_labels(dataset), template)
    train = load(dataset, "train")
    random.Random(seed).shuffle(train)
    examples = [{"id": f"{dataset}-{i}", "input": input_of(row, template), "label": row["label"]}
                for i, row in enumerate(train[:pool_size])]
    for start in range(0, len(examples), 5000):
        client.add_examples(name, examples[start:start + 5000])
    return name, template


def evaluate(client: Client, name: str, template: str, rows: list[dict], k: int, selection: str,
             calibration: str, batch: int, seed: int) -> dict:
    # Each configuration starts from an empty prefix cache: otherwise a run re-reads the prompts of the
    # run before it (same inputs), and its computed tokens and latency look better than they are.
    client.reset_prefix_cache()
    gold, predicted, latencies, got = [], [], [], Counter()
    prompt_tokens = calibration_tokens = total_tokens = cached_tokens = 0
    began = time.perf_counter()
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        t0 = time.perf_counter()
        body = client.predict(name, [input_of(row, template) for row in chunk], demos=k, selection=selection,
                              calibration=calibration, seed=seed)
        latencies.append((time.perf_counter() - t0) / len(chunk))
        gold += [row["label"] for row in chunk]
        predicted += [p["label"] for p in body["predictions"]]
        got.update(p["calibration"] for p in body["predictions"])
        usage = body["usage"]
        prompt_tokens += usage["prompt_tokens"]
        calibration_tokens += usage["calibration_tokens"]
        total_tokens += usage["total_tokens"]
        cached_tokens += usage.get("cached_tokens", 0)
    n = len(rows)
    return {
        "k": k, "selection": selection, "calibration": calibration, "n": n,
        "accuracy": sum(g == p for g, p in zip(gold, predicted, strict=True)) / n,
        "macro_f1": f1_score(gold, predicted, average="macro"),
        "prompt_tokens_per_input": prompt_tokens / n,
        "calibration_tokens_per_input": calibration_tokens / n,
        "computed_tokens_per_input": (total_tokens - cached_tokens) / n,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service; default: start one")
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
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--table", type=Path, nargs="+", help="only print the table of earlier results or logs")
    args = parser.parse_args()
    if args.table:
        print_table([r for path in args.table for r in read_results(path)])
        return

    results = []
    with (service(args.url, auto_fit=not args.fit) as url, Client(url, args.api_key, timeout=3600) as client):
        model = client.models()[0]["id"]

        def run(dataset: str, name: str, template: str, rows: list[dict], k: int, selection: str,
                calibration: str, fitted: bool) -> None:
            result = {"dataset": dataset, "model": model, "fitted": fitted,
                      **evaluate(client, name, template, rows, k, selection, calibration, args.batch, args.seed)}
            results.append(result)
            print(json.dumps(result), flush=True)

        for dataset in args.datasets:
            name, template = setup_task(client, dataset, args.pool_size, args.seed)
            test = load(dataset, "test")
            random.Random(args.seed).shuffle(test)
            rows = test[:args.n_test]
            for selection in args.selection:
                for k in args.k:
                    if k or selection == args.selection[0]:
                        for calibration in args.calibration:
                            run(dataset, name, template, rows, k, selection, calibration, False)
                if args.fit and "auto" in args.calibration:
                    fitted = fit(client, name, selection, args.fit_k, args.fit_size, args.seed)
                    print(json.dumps({"dataset": dataset, "fit": fitted}), flush=True)
                    for k in args.k:
                        if k or selection == args.selection[0]:
                            run(dataset, name, template, rows, k, selection, "auto", True)
                            results[-1]["fit"] = fitted
    save_results(args.out, "eval", results)
    print_table(results)


def read_results(path: Path) -> list[dict]:
    """A results file, or a log of this script's output (one JSON object per line)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [row for row in rows if "calibration" in row]  # not the fit lines


def print_table(results: list[dict]) -> None:
    print("\n| dataset | k | selection | calibration | n | accuracy | macro-F1 | prompt tok/input | "
          "calib tok/input | computed tok/input | latency ms/input |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        sel = r["selection"] if r["k"] else "-"
        mode = r["calibration"] + (" (fitted)" if r.get("fitted") else "")
        print(f"| {r['dataset']} | {r['k']} | {sel} | {mode} | {r['n']} | {r['accuracy']:.3f} | "
              f"{r['macro_f1']:.3f} | {r['prompt_tokens_per_input']:.0f} | {r['calibration_tokens_per_input']:.0f} | "
              f"{r['computed_tokens_per_input']:.0f} | {r['latency_ms_per_input_median_batch']:.0f} |")

if __name__ == "__main__":
    main()
