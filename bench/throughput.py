"""The service against raw vLLM on the very same prompts: how much of the engine's throughput serving keeps.

    python -m bench.throughput                                   # TREC, pool 1000, 64 test inputs, k = 4, kNN
    python -m bench.throughput --n 64 --clients 1 8 64 --repeats 3
    python -m bench.throughput --profile bench/results/profile --profile-modes c1 c8   # py-spy, see below

One task (--dataset, default TREC: 6 labels, each one token; the shared datasets have no SST-5) with --pool-size
shuffled training examples as its labeled pool, and --n shuffled test inputs (seed 0), predicted with
`demos: 4`, `selection: "knn"`, `calibration: "none"`. Modes:

- batch: one request holding all N inputs (raw: all N prompts submitted at once);
- cC: C concurrent clients, one input per request, each client sending its share of the inputs in sequence
  (raw: C coroutines, each awaiting its prompts one after another).

The service is a real server process (`python -m service.cli serve`, automatic fits off) with an admin key of
the benchmark's own, so that the prefix cache is emptied (POST /v1/admin/reset-prefix-cache) before each timing.
An untimed request of all N inputs with `include_prompt` warms it up and gives the prompts: each prompt's text,
tokenized as the service tokenizes it, must have exactly the response's `prompt_tokens` tokens.

Then the server is stopped and the same prompt token ids go to vLLM's own `AsyncLLM` in this process
(`bench.harness.raw_engine`: the service's engine arguments, CPU environment and label token ids),
`engine.reset_prefix_cache()` before each timing, after one untimed batch of warm-up. The two engines never
run at the same time. Raw vLLM's labels and probabilities are checked against the service's warm-up answers.

Each mode is timed --repeats times (rounds over all modes, so that noise on the shared machine spreads over
every mode) and medians are reported: seconds, throughput ratio raw_s / service_s (the service's throughput as
a fraction of raw vLLM's), prompt tokens per second. The 1-minute load average is recorded before and after
each timing. JSON goes to bench/results/throughput-<time>.json with the host's CPU flags and the dtype.

Engine settings go in the environment (`ICL_*`, `VLLM_CPU_*`), which the server and raw vLLM both read; with
--raw-only RESULTS, raw vLLM alone runs on the prompts an earlier run saved, to compare engine settings.

With --profile DIR, after the timings and before the server stops, each of --profile-modes is run
--profile-rounds more times under `py-spy record --subprocesses --format raw` attached to the server (DIR/
service-<mode>.txt, collapsed stacks: `python -m bench.throughput --summarise-profile FILE` breaks them down by
process and activity: event loop, planning threads (embedder, store read, tokenizing, retrieval), vLLM's engine
core and its model worker).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.datasets import Dataset, load_dataset
from bench.harness.host import describe_host, host_line, load_1m
from bench.harness.profiling import Profiler, summarise_profile
from bench.harness.raw_engine import clients_of, engine_config, modes, raw_runs, service_tokens, split
from bench.harness.results import add_out_argument, read_json, results_path, write_json
from bench.harness.server import Service, add_server_arguments, dataset_task, served_from
from bench.harness.tables import cell, print_table

TASK = "throughput"
# What the warm-up keeps of each prediction, under the names the results file gives them.
WARM_UP = {"prompts": "prompt", "prompt_tokens": "prompt_tokens", "labels": "label",
           "uncalibrated_probs": "uncalibrated_probs", "demo_ids": "demo_ids"}


def predict_body(inputs: list[Any], k: int) -> dict:
    return {"inputs": inputs, "demos": k, "selection": "knn", "calibration": "none"}


# --- the service ---------------------------------------------------------------------------------------------


async def service_run(url: str, inputs: list[Any], k: int, clients: int) -> dict:
    """One timing through HTTP: ``clients`` concurrent clients, one input per request, each sending its share of
    the inputs in sequence; ``clients`` 0: one request of every input."""
    limits = httpx.Limits(max_connections=max(clients, 1), max_keepalive_connections=max(clients, 1))
    answers: dict[int, dict] = {}
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as client:

        async def one(indices: list[int]) -> None:
            began = time.perf_counter()
            response = await client.post(f"/v1/tasks/{TASK}/predict",
                                         json=predict_body([inputs[i] for i in indices], k))
            response.raise_for_status()
            latencies.append(time.perf_counter() - began)
            body = response.json()
            for i, prediction in zip(indices, body["predictions"], strict=True):
                answers[i] = {"prediction": prediction, "usage": body["usage"] if len(indices) == 1 else None}
            if len(indices) > 1:
                answers[-1] = {"usage": body["usage"]}

        async def client_loop(share: list[int]) -> None:
            for i in share:
                await one([i])

        load_before = load_1m()
        began = time.perf_counter()
        if clients == 0:
            await one(list(range(len(inputs))))
        else:
            await asyncio.gather(*(client_loop(share) for share in split(range(len(inputs)), clients)))
        seconds = time.perf_counter() - began
    usages = [a["usage"] for a in answers.values() if a.get("usage")]
    return {
        "seconds": seconds, "load_before": load_before, "load_after": load_1m(),
        "cached_tokens": sum(u["cached_tokens"] for u in usages),
        "computed_tokens": sum(u["computed_tokens"] for u in usages),
        "latency_median_s": statistics.median(latencies),
        "labels": [answers[i]["prediction"]["label"] for i in range(len(inputs))],
        "demo_ids": [answers[i]["prediction"]["demo_ids"] for i in range(len(inputs))],
    }


def timed(service: Service, inputs: list[Any], k: int, mode: str) -> dict:
    """One timing of ``mode`` from an empty prefix cache."""
    service.reset_prefix_cache()
    return asyncio.run(service_run(service.url, inputs, k, 0 if mode == "batch" else clients_of(mode, len(inputs))))


def warm_up(service: Service, data: Dataset, pool: list[dict], inputs: list[Any], k: int) -> dict:
    """The task, and one untimed request of every input: it warms the engine and the task's context, and gives
    the prompts the service builds."""
    with service.client() as client:
        dataset_task(client, data, pool, TASK)
        service.reset_prefix_cache()
        body = client.predict(TASK, inputs, demos=k, selection="knn", calibration="none", include_prompt=True)
    out: dict = {key: [p[field] for p in body["predictions"]] for key, field in WARM_UP.items()}
    out["model"] = body["model"]
    return out


def profile(args: argparse.Namespace, service: Service, inputs: list[Any]) -> dict[str, list[float]]:
    """Each of --profile-modes, --profile-rounds more times under py-spy: each round's seconds."""
    assert service.process is not None
    profiled = {}
    for mode in args.profile_modes:
        profiler = Profiler(service.process.pid, args.profile / f"service-{args.profile_tag}{mode}.txt",
                            args.profile_rate)
        seconds = [timed(service, inputs, args.k, mode)["seconds"] for _ in range(args.profile_rounds)]
        profiler.stop()
        print(f"profiled service {mode}: {args.profile_rounds} rounds, {' / '.join(f'{s:.2f}' for s in seconds)} s",
              flush=True)
        profiled[mode] = seconds
    return profiled


def run_service(args: argparse.Namespace, data: Dataset, pool: list[dict], test: list[dict]) -> dict:
    inputs = data.inputs(test)
    with served_from(args, auto_fit=False) as service:
        out = warm_up(service, data, pool, inputs, args.k)
        out["runs"] = {m: [] for m in modes(args.clients)}
        for repeat in range(args.repeats):
            for mode in modes(args.clients):
                run = timed(service, inputs, args.k, mode)
                if run.pop("demo_ids") != out["demo_ids"]:
                    raise SystemExit(f"service {mode}: other demonstrations than the warm-up's; not comparable")
                out["runs"][mode].append(run)
                print(f"service {mode} #{repeat + 1}: {run['seconds']:.2f} s (load {run['load_before']:.2f} -> "
                      f"{run['load_after']:.2f})", flush=True)
        if args.profile is not None:
            out["profiled"] = profile(args, service, inputs)
    return out


# --- the comparison ------------------------------------------------------------------------------------------


def summary(args: argparse.Namespace, service: dict, raw: dict, prompt_tokens: int) -> list[dict]:
    rows = []
    for mode in modes(args.clients):
        s = statistics.median(r["seconds"] for r in service["runs"][mode]) if service["runs"].get(mode) else None
        r = statistics.median(x["seconds"] for x in raw["runs"][mode]) if raw["runs"].get(mode) else None
        rows.append({
            "mode": mode, "service_s": s, "raw_s": r, "ratio": r / s if s and r else None,
            "service_tok_s": prompt_tokens / s if s else None, "raw_tok_s": prompt_tokens / r if r else None,
            "service_s_runs": [x["seconds"] for x in service["runs"].get(mode, [])],
            "raw_s_runs": [x["seconds"] for x in raw["runs"].get(mode, [])],
        })
    return rows


def agreement(service: dict, raw: dict, labels: list[str]) -> dict:
    """Raw vLLM's argmax against the service's labels, and the largest probability difference (bf16 results
    depend a little on how the engine batches)."""
    first = raw["runs"]["batch"][0]["logprobs"] if raw["runs"].get("batch") else None
    if first is None:
        return {}
    worst, same = 0.0, 0
    for logprobs, label, probs in zip(first, service["labels"], service["uncalibrated_probs"], strict=True):
        values = np.exp(np.asarray(logprobs) - max(logprobs))
        values /= values.sum()
        same += labels[int(np.argmax(values))] == label
        worst = max(worst, max(abs(float(v) - probs[name]) for v, name in zip(values, labels, strict=True)))
    return {"same_label": same, "of": len(first), "max_abs_prob_diff": worst}


def record(args: argparse.Namespace, data: Dataset, service: dict, raw: dict, prompt_tokens: int,
           continuations: list[list[int]], dtype: str) -> dict:
    """What the results file keeps: the setup, the host, the summary, every run, and the warm-up's prompts (which
    --raw-only reads back)."""
    return {
        "dataset": data.name, "labels": data.labels, "pool_size": args.pool_size, "n": args.n, "k": args.k,
        "selection": "knn", "calibration": "none", "repeats": args.repeats, "clients": args.clients,
        "model": service["model"], "dtype": dtype, "host": describe_host(dtype),
        "server_env": args.server_env, "prompt_tokens": prompt_tokens, "label_token_ids": continuations,
        "engine": {k: raw.get(k) for k in ("arguments", "block_size", "env", "max_num_batched_tokens",
                                            "max_num_seqs")},
        "agreement": agreement(service, raw, data.labels) if raw["runs"] else {},
        "summary": summary(args, service, raw, prompt_tokens),
        "service_runs": {m: [{k: v for k, v in r.items() if k != "labels"} for r in runs]
                         for m, runs in service["runs"].items()},
        "raw_runs": {m: [{k: v for k, v in r.items() if k != "logprobs"} for r in runs]
                     for m, runs in raw["runs"].items()},
        "profiled": service.get("profiled"),
        "raw_only_prompts_from": str(args.raw_only) if args.raw_only else None,
        "service_prompts": {k: service[k] for k in WARM_UP},
    }


def print_summary(result: dict) -> None:
    title = (f"{result['dataset']}, pool {result['pool_size']}, N = {result['n']}, k = {result['k']} kNN, calibration "
             f"none; {host_line(result['host'])}; {result['prompt_tokens']} prompt tokens; medians of "
             f"{result['repeats']}")
    header = ["mode", "service s", "raw vLLM s", "ratio raw/service", "service prompt tok/s", "raw prompt tok/s"]
    print_table(header, ([("batch (1 request of N)" if r["mode"] == "batch" else f"{r['mode'][1:]} clients"),
                          cell(r["service_s"], ".2f"), cell(r["raw_s"], ".2f"), cell(r["ratio"], ".2f"),
                          cell(r["service_tok_s"], ".0f"), cell(r["raw_tok_s"], ".0f")] for r in result["summary"]),
                title)
    if result["agreement"]:
        print(f"\nraw vLLM against the service: {result['agreement']}")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n", type=int, default=64, help="test inputs")
    parser.add_argument("--k", type=int, default=4, help="demonstrations per input (kNN)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-raw", action="store_true", help="the service only (e.g. while profiling)")
    parser.add_argument("--raw-only", type=Path, metavar="RESULTS",
                        help="raw vLLM only, on the prompts of an earlier results file (engine settings)")
    add_server_arguments(parser, url=False, engine=False)
    parser.add_argument("--profile", type=Path, help="folder for py-spy profiles of the server")
    parser.add_argument("--profile-modes", nargs="+", default=["c1", "c8"])
    parser.add_argument("--profile-rounds", type=int, default=3)
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-tag", default="", help="prefix of the profile files' names")
    parser.add_argument("--summarise-profile", type=Path, nargs="+", help="only break down py-spy raw profiles")
    parser.add_argument("--top", type=int, default=25)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.summarise_profile:
        for path in args.summarise_profile:
            summarise_profile(path, args.top)
        return
    data = load_dataset(args.dataset, args.seed)
    data.require(args.pool_size, args.n)
    path = results_path(args.out, "throughput")
    if args.raw_only:
        earlier = read_json(args.raw_only)
        service = {"runs": {}, "model": earlier["model"], **earlier["service_prompts"]}
    else:
        service = run_service(args, data, data.train[:args.pool_size], data.test[:args.n])
    model_dir, arguments = engine_config()
    prompts, continuations = service_tokens(model_dir, service["prompts"], service["prompt_tokens"], data.template,
                                            data.labels)
    raw: dict = {"runs": {}}
    if not args.skip_raw:
        raw = asyncio.run(raw_runs(prompts, continuations, modes(args.clients), args.repeats))
    result = record(args, data, service, raw, sum(len(p) for p in prompts), continuations,
                    raw.get("dtype", arguments["dtype"]))
    write_json(path, result)
    print_summary(result)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
