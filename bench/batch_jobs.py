"""A batch job against raw vLLM on the same prompts, and what a running batch job does to interactive predicts.

    python bench/batch_jobs.py                       # TREC, pool 1000, a job of 2000 inputs, k = 4, kNN
    python bench/batch_jobs.py --n 500 --probes 10   # a quicker look

One task (--dataset) with --pool-size shuffled training examples as its labeled pool; the job's --n inputs are
the next training rows (then test rows), the probes are test rows the job does not hold. Predict options:
`demos: k`, `selection: "knn"`, `calibration: "none"`. In one run, the prefix cache emptied before each part:

1. idle latency: --probes one-input predicts, one after another, on an idle service;
2. the batch job alone: POST /v1/tasks/{name}/batches (JSON), polled until it succeeds (seconds from the POST
   to the poll that sees it end; the poll interval, 0.25 s, bounds the error);
3. the batch job again, with one-input predicts sent one after another while it runs: their latency, and the
   job's time with them;
4. the server stopped, raw vLLM (`AsyncLLM`, as bench/throughput.py runs it) on the very prompts the job
   built, all submitted at once: the engine's best case for the same work.

Reports the job's throughput as a fraction of raw vLLM's, and the probes' p50 latency during the job against
idle. JSON goes to bench/results/batch-jobs-<time>.json with the CPU flags and the dtype.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_http import DEFAULT_TEMPLATE, TEMPLATES, input_of, load, manifest_labels  # noqa: E402
from throughput import TASK, cpu_flags, engine_config, load_1m, raw_runs, server, setup_task  # noqa: E402

from controller.templates import PromptTemplate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.25


def options(k: int) -> dict[str, Any]:
    return {"demos": k, "selection": "knn", "calibration": "none"}


def reset(client: httpx.Client, admin_key: str) -> None:
    client.post("/v1/admin/reset-prefix-cache", headers={"Authorization": f"Bearer {admin_key}"}).raise_for_status()


def probe(client: httpx.Client, value: Any, k: int) -> float:
    began = time.perf_counter()
    client.post(f"/v1/tasks/{TASK}/predict", json={"inputs": [value], **options(k)}).raise_for_status()
    return time.perf_counter() - began


def run_job(client: httpx.Client, inputs: list[Any], k: int, probes: list[Any] | None) -> dict[str, Any]:
    """Start the job, wait for it; with ``probes``, send them one after another while it runs."""
    load_before = load_1m()
    began = time.perf_counter()
    response = client.post(f"/v1/tasks/{TASK}/batches", json={"inputs": inputs, "include_prompt": True, **options(k)})
    response.raise_for_status()
    job_id = response.json()["job_id"]
    latencies: list[float] = []
    next_poll = 0.0
    while True:
        now = time.perf_counter()
        if now >= next_poll:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] != "running" and job["status"] != "queued":
                break
            next_poll = now + POLL_S
        if probes and job["batch"]["done"] > 0 and len(latencies) < len(probes):
            latencies.append(probe(client, probes[len(latencies)], k))
        else:
            time.sleep(0.02)
    seconds = time.perf_counter() - began
    if job["status"] != "succeeded":
        raise SystemExit(f"the batch job ended {job['status']}: {job.get('error')}")
    return {"job_id": job_id, "seconds": seconds, "load_before": load_before, "load_after": load_1m(),
            "probe_latencies_s": latencies, "batch": job["batch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n", type=int, default=2000, help="inputs in the batch job")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--probes", type=int, default=20, help="one-input predicts, idle and during the job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE", help="extra server settings")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()

    train, test = load(args.dataset, "train"), load(args.dataset, "test")
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed).shuffle(test)
    template_text = TEMPLATES.get(args.dataset, DEFAULT_TEMPLATE)
    pool = train[:args.pool_size]
    rows = (train[args.pool_size:] + test[args.probes:])[:args.n]
    if len(rows) < args.n or len(test) < args.probes:
        raise SystemExit(f"{args.dataset} has too few rows for a pool of {args.pool_size}, {args.n} inputs and "
                         f"{args.probes} probes")
    inputs = [input_of(row, template_text) for row in rows]
    probes = [input_of(row, template_text) for row in test[:args.probes]]
    started = time.strftime("%Y%m%d-%H%M%S")

    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    with server(extra_env) as (_, url, admin_key), httpx.Client(base_url=url, timeout=3600) as client:
        setup_task(client, args.dataset, pool, template_text)
        client.post(f"/v1/tasks/{TASK}/predict", json={"inputs": probes[:8], **options(args.k)}).raise_for_status()
        reset(client, admin_key)
        idle = [probe(client, value, args.k) for value in probes]
        reset(client, admin_key)
        alone = run_job(client, inputs, args.k, None)
        print(f"batch job alone: {alone['seconds']:.1f} s", flush=True)
        reset(client, admin_key)
        probed = run_job(client, inputs, args.k, probes)
        print(f"batch job with probes: {probed['seconds']:.1f} s, {len(probed['probe_latencies_s'])} probes",
              flush=True)
        results = [json.loads(line) for line in
                   client.get(f"/v1/jobs/{alone['job_id']}/results", params={"format": "jsonl"}).text.splitlines()]
    predictions = [r["prediction"] for r in results]

    from transformers import AutoTokenizer

    model_dir, arguments = engine_config()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = [list(tokenizer(p["prompt"], add_special_tokens=True)["input_ids"]) for p in predictions]
    if any(len(ids) != p["prompt_tokens"] for ids, p in zip(prompts, predictions, strict=True)):
        raise SystemExit("the job's prompts do not tokenize to its prompt_tokens: not comparable")
    template = PromptTemplate.parse(template_text)
    continuations = [list(tokenizer(template.continuation(label), add_special_tokens=False)["input_ids"])
                     for label in manifest_labels(args.dataset)]
    raw = asyncio.run(raw_runs(argparse.Namespace(clients=[], repeats=1), prompts, continuations))
    raw_s = raw["runs"]["batch"][0]["seconds"]
    tokens = sum(len(p) for p in prompts)

    result = {
        "dataset": args.dataset, "pool_size": args.pool_size, "n": args.n, "k": args.k, "selection": "knn",
        "calibration": "none", "dtype": raw.get("dtype", arguments["dtype"]), "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "server_env": args.server_env, "prompt_tokens": tokens,
        "job_s": alone["seconds"], "raw_s": raw_s, "ratio": raw_s / alone["seconds"],
        "job_with_probes_s": probed["seconds"],
        "idle_latency_s": idle, "during_latency_s": probed["probe_latencies_s"],
        "idle_p50_s": statistics.median(idle),
        "during_p50_s": statistics.median(probed["probe_latencies_s"]) if probed["probe_latencies_s"] else None,
        "loads": {"alone": [alone["load_before"], alone["load_after"]],
                  "probed": [probed["load_before"], probed["load_after"]],
                  "raw": [raw["runs"]["batch"][0]["load_before"], raw["runs"]["batch"][0]["load_after"]]},
        "engine": {k: raw.get(k) for k in ("block_size", "env", "max_num_batched_tokens", "max_num_seqs")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"batch-jobs-{started}.json"
    path.write_text(json.dumps(result, indent=1))
    during = result["during_p50_s"]
    print(f"\n{args.dataset}, pool {args.pool_size}, {args.n} inputs, k = {args.k} kNN, calibration none; "
          f"{result['dtype']}, CPU flags {' '.join(result['cpu_flags'])}; {tokens} prompt tokens\n")
    print("| what | seconds | prompt tok/s | ratio to raw vLLM |")
    print("|---|---|---|---|")
    print(f"| batch job (alone) | {alone['seconds']:.1f} | {tokens / alone['seconds']:.0f} | {result['ratio']:.2f} |")
    print(f"| raw vLLM, all prompts at once | {raw_s:.1f} | {tokens / raw_s:.0f} | 1.00 |")
    print(f"| batch job with probes | {probed['seconds']:.1f} | {tokens / probed['seconds']:.0f} | "
          f"{raw_s / probed['seconds']:.2f} |")
    idle_p50 = result["idle_p50_s"]
    during_text = "-" if during is None else f"{1000 * during:.0f} ms ({during / idle_p50:.1f}x)"
    print(f"\none-input predict p50: idle {1000 * idle_p50:.0f} ms, during the job {during_text}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
