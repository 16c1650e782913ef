"""Overload: many clients, mixed request sizes, an engine that cannot keep up. Every request must get exactly
one answer (200, or 429/503 with Retry-After), no prediction may be lost, duplicated or swapped, and the
server's memory must stay bounded.

    python -m bench.overload                       # fake engine: 20,000 prompt tokens/s, 512 prompts admitted
    python -m bench.overload --engine vllm --requests 200 --clients 16 --max-inflight 256

Without --url it starts `iclserve serve` with a temporary data directory (the fake engine: ICL_ENGINE=fake,
ICL_FAKE_TOKENS_PER_S; or the real one), creates a task on SST-2's training texts (or synthetic texts when
the shared datasets are absent) and sends --requests predicts of 1 to 64 inputs from --clients concurrent
clients, each with a --timeout-s limit. Each input carries a unique marker; its answer's prompt must end
with that input's query, in order, and (fake engine) its label must be the one the fake model gives it.
Prints answers by status, lost / duplicated / swapped predictions, p50/p99 latency, throughput and the
server's peak RSS (with its child processes), and saves them under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import threading
import time
from collections import Counter

import httpx
import psutil

from bench.harness.cli import argument_parser
from bench.harness.datasets import datasets_dir, load, shuffled
from bench.harness.host import describe_host
from bench.harness.results import add_out_argument, results_path, write_json
from bench.harness.server import fresh_task, served

TASK = {"name": "overload", "labels": ["negative", "positive"], "template": "Input: {text}\nLabel: {label}"}


def texts(n: int, seed: int) -> list[str]:
    """SST-2's training sentences where the shared datasets are, otherwise synthetic ones."""
    if (datasets_dir() / "sst2").exists():
        return [row["text"] for row in shuffled(load("sst2", "train"), seed)[:n]]
    return [f"{random.Random(i).choice(['good', 'bad', 'fine'])} film number {i}" for i in range(n)]


def fake_label(text: str) -> str:
    """What the fake engine answers: the label named most often in the query (ties: the first label)."""
    words = text.split()
    counts = [sum(w == label for w in words) for label in TASK["labels"]]
    return TASK["labels"][max(range(2), key=lambda i: (counts[i] - 0.1 * i))]


class PeakRss(threading.Thread):
    """The peak resident memory of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                family = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in family if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)


async def one_request(client: httpx.AsyncClient, number: int, inputs: list[str], fake: bool) -> dict:
    began = time.perf_counter()
    try:
        response = await client.post(f"/v1/tasks/{TASK['name']}/predict",
                                     json={"inputs": inputs, "demos": 4, "include_prompt": True})
    except httpx.TimeoutException:
        return {"request": number, "status": "timeout", "latency_s": time.perf_counter() - began}
    except httpx.HTTPError as exc:
        return {"request": number, "status": f"error:{type(exc).__name__}", "latency_s": time.perf_counter() - began}
    out = {"request": number, "status": response.status_code, "latency_s": time.perf_counter() - began,
           "inputs": len(inputs)}
    if response.status_code in (429, 503):
        out["retry_after"] = response.headers.get("retry-after")
    if response.status_code == 200:
        predictions = response.json()["predictions"]
        out["answered"] = len(predictions)
        out["lost"] = max(len(inputs) - len(predictions), 0)
        out["duplicated"] = max(len(predictions) - len(inputs), 0)
        out["swapped"] = sum(not (p.get("prompt") or "").endswith(f"Input: {text}\nLabel:")
                             or (fake and p["label"] != fake_label(text))
                             for p, text in zip(predictions, inputs, strict=False))
    return out


async def run_load(url: str, args: argparse.Namespace, pool: list[str], queries: list[str]) -> list[dict]:
    rng = random.Random(args.seed)
    plan = []
    for number in range(args.requests):
        size = rng.choice([1, 1, 1, 2, 4, 8, 16, 32, 64])  # mostly small, some large
        plan.append((number, [f"[r{number}.{i}] {rng.choice(queries)}" for i in range(size)]))
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    results: list[dict] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=args.timeout_s, limits=limits) as client:
            while not queue.empty():
                number, inputs = queue.get_nowait()
                results.append(await one_request(client, number, inputs, args.engine == "fake"))

    await asyncio.gather(*(worker() for _ in range(args.clients)))
    return results


def summarise(results: list[dict], wall_s: float, peak_rss: int, args: argparse.Namespace) -> dict:
    statuses = Counter(str(r["status"]) for r in results)
    ok = [r for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] in (429, 503)]
    latencies = sorted(r["latency_s"] for r in ok)
    answered = sum(r["answered"] for r in ok)
    return {
        "engine": args.engine, "requests": args.requests, "clients": args.clients,
        "fake_tokens_per_s": args.fake_tokens_per_s if args.engine == "fake" else None,
        "max_inflight_prompts": args.max_inflight, "timeout_s": args.timeout_s,
        "answers_by_status": dict(statuses),
        "answered_once": len({r["request"] for r in results}) == len(results) == args.requests,
        "refusals_without_retry_after": sum(not r.get("retry_after") for r in refused),
        "lost": sum(r["lost"] for r in ok), "duplicated": sum(r["duplicated"] for r in ok),
        "swapped": sum(r["swapped"] for r in ok),
        "predictions": answered,
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "throughput_inputs_per_s": answered / wall_s, "wall_s": wall_s,
        "peak_rss_mib": peak_rss / 2**20, "host": describe_host(),
    }


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--url", help="a running service (its own settings then decide the limits)")
    parser.add_argument("--engine", choices=["fake", "vllm"], default="fake")
    parser.add_argument("--fake-tokens-per-s", type=float, default=20000.0)
    parser.add_argument("--max-inflight", type=int, default=512, help="ICL_MAX_INFLIGHT_PROMPTS of the server")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="each client's limit per request")
    parser.add_argument("--pool-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    corpus = texts(args.pool_size + 500, args.seed)
    pool, queries = corpus[:args.pool_size], corpus[args.pool_size:]
    env = {"ICL_MAX_INFLIGHT_PROMPTS": str(args.max_inflight), "ICL_FAKE_TOKENS_PER_S": str(args.fake_tokens_per_s)}
    with served(args.url, engine=args.engine, auto_fit=False, env=env) as service:
        with service.client(timeout=120) as client:
            labels = TASK["labels"]
            fresh_task(client, TASK["name"], labels, TASK["template"],
                       [{"id": f"p{i}", "input": text, "label": labels[i % 2]} for i, text in enumerate(pool)])
        rss = PeakRss(service.process.pid if service.process else os.getpid())
        if service.process:
            rss.start()
        began = time.perf_counter()
        results = asyncio.run(run_load(service.url, args, pool, queries))
        wall = time.perf_counter() - began
        rss.done.set()
        summary = summarise(results, wall, rss.peak, args)
    print(json.dumps(summary, indent=1))
    path = write_json(results_path(args.out, f"overload-{args.engine}"), {"summary": summary, "requests": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
