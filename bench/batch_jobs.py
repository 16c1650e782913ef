"""A batch job against raw vLLM on the same prompts, and what a running batch job does to interactive predicts.

    python -m bench.batch_jobs                       # TREC, pool 1000, a job of 2000 inputs, k = 4, kNN
    python -m bench.batch_jobs --n 500 --probes 10   # a quicker look

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
import statistics
import time
from typing import Any

from bench.harness.cli import argument_parser
from bench.harness.datasets import Dataset, load_dataset
from bench.harness.host import describe_host, host_line, load_1m
from bench.harness.raw_engine import engine_config, raw_runs, service_tokens
from bench.harness.results import add_out_argument, results_path, write_json
from bench.harness.server import Service, add_server_arguments, dataset_task, served_from
from bench.harness.tables import print_table
from iclclient import Client

TASK = "batch-jobs"
POLL_S = 0.25
OPTIONS: dict[str, Any] = {"selection": "knn", "calibration": "none"}


def probe(client: Client, value: Any, k: int) -> float:
    began = time.perf_counter()
    client.predict(TASK, [value], demos=k, **OPTIONS)
    return time.perf_counter() - began


def run_job(client: Client, inputs: list[Any], k: int, probes: list[Any] | None) -> dict[str, Any]:
    """Start the job, wait for it; with ``probes``, send them one after another while it runs."""
    load_before = load_1m()
    began = time.perf_counter()
    job_id = client.create_batch(TASK, inputs, demos=k, include_prompt=True, **OPTIONS)
    latencies: list[float] = []
    next_poll = 0.0
    while True:
        now = time.perf_counter()
        if now >= next_poll:
            job = client.get_job(job_id)
            if job["status"] not in ("running", "queued"):
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


def serve_parts(service: Service, args: argparse.Namespace, data: Dataset, pool: list[dict], inputs: list[Any],
                probes: list[Any]) -> dict[str, Any]:
    """Parts 1 to 3 on the service: idle probes, the job alone, the job with probes; and the job's answers."""
    with service.client() as client:
        dataset_task(client, data, pool, TASK)
        client.predict(TASK, probes[:8], demos=args.k, **OPTIONS)  # warm-up
        service.reset_prefix_cache()
        idle = [probe(client, value, args.k) for value in probes]
        service.reset_prefix_cache()
        alone = run_job(client, inputs, args.k, None)
        print(f"batch job alone: {alone['seconds']:.1f} s", flush=True)
        service.reset_prefix_cache()
        probed = run_job(client, inputs, args.k, probes)
        print(f"batch job with probes: {probed['seconds']:.1f} s, {len(probed['probe_latencies_s'])} probes",
              flush=True)
        predictions = [r["prediction"] for r in client.iter_batch_results(alone["job_id"])]
    return {"idle": idle, "alone": alone, "probed": probed, "predictions": predictions}


def record(args: argparse.Namespace, served: dict[str, Any], raw: dict[str, Any], tokens: int, dtype: str) -> dict:
    alone, probed, idle = served["alone"], served["probed"], served["idle"]
    raw_run = raw["runs"]["batch"][0]
    during = probed["probe_latencies_s"]
    return {
        "dataset": args.dataset, "pool_size": args.pool_size, "n": args.n, "k": args.k, "selection": "knn",
        "calibration": "none", "dtype": dtype, "host": describe_host(dtype),
        "server_env": args.server_env, "prompt_tokens": tokens,
        "job_s": alone["seconds"], "raw_s": raw_run["seconds"], "ratio": raw_run["seconds"] / alone["seconds"],
        "job_with_probes_s": probed["seconds"],
        "idle_latency_s": idle, "during_latency_s": during,
        "idle_p50_s": statistics.median(idle), "during_p50_s": statistics.median(during) if during else None,
        "loads": {"alone": [alone["load_before"], alone["load_after"]],
                  "probed": [probed["load_before"], probed["load_after"]],
                  "raw": [raw_run["load_before"], raw_run["load_after"]]},
        "engine": {k: raw.get(k) for k in ("block_size", "env", "max_num_batched_tokens", "max_num_seqs")},
    }


def print_summary(result: dict) -> None:
    tokens, raw_s = result["prompt_tokens"], result["raw_s"]
    title = (f"{result['dataset']}, pool {result['pool_size']}, {result['n']} inputs, k = {result['k']} kNN, "
             f"calibration none; {host_line(result['host'])}; {tokens} prompt tokens")
    rows = [("batch job (alone)", result["job_s"]), ("raw vLLM, all prompts at once", raw_s),
            ("batch job with probes", result["job_with_probes_s"])]
    print_table(["what", "seconds", "prompt tok/s", "ratio to raw vLLM"],
                ([what, f"{s:.1f}", f"{tokens / s:.0f}", f"{raw_s / s:.2f}"] for what, s in rows), title)
    idle, during = result["idle_p50_s"], result["during_p50_s"]
    during_text = "-" if during is None else f"{1000 * during:.0f} ms ({during / idle:.1f}x)"
    print(f"\none-input predict p50: idle {1000 * idle:.0f} ms, during the job {during_text}")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n", type=int, default=2000, help="inputs in the batch job")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--probes", type=int, default=20, help="one-input predicts, idle and during the job")
    parser.add_argument("--seed", type=int, default=0)
    add_server_arguments(parser, url=False, engine=False)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data = load_dataset(args.dataset, args.seed)
    pool = data.train[:args.pool_size]
    rows = (data.train[args.pool_size:] + data.test[args.probes:])[:args.n]
    if len(rows) < args.n or len(data.test) < args.probes:
        raise SystemExit(f"{args.dataset} has too few rows for a pool of {args.pool_size}, {args.n} inputs and "
                         f"{args.probes} probes")
    path = results_path(args.out, "batch-jobs")
    with served_from(args, auto_fit=False) as service:
        served = serve_parts(service, args, data, pool, data.inputs(rows), data.inputs(data.test[:args.probes]))
    predictions = served["predictions"]
    model_dir, arguments = engine_config()
    prompts, continuations = service_tokens(model_dir, [p["prompt"] for p in predictions],
                                            [p["prompt_tokens"] for p in predictions], data.template, data.labels)
    raw = asyncio.run(raw_runs(prompts, continuations, ["batch"], 1))
    result = record(args, served, raw, sum(len(p) for p in prompts), raw.get("dtype", arguments["dtype"]))
    write_json(path, result)
    print_summary(result)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
