"""Engine settings on this machine: prompt throughput by dtype and KV-cache block size (`service/engine.py`).

    python -m bench.engine_settings --settings float32/128 float32/32 bfloat16/128

Per setting (DTYPE/BLOCK) one engine is started in its own process and runs two workloads of SST-2 prompts:
- distinct: --distinct prompts of 5 random demonstrations each, prefix cache emptied before each of
  --repeats runs (tokens per second of prompt, one figure per run);
- shared: one set of 5 demonstrations followed by --shared different queries, after one warm-up query on an
  empty cache (tokens per second counting cached tokens, and how many of them came from the cache).
The tokens are the service's label scoring (one request per label for SST-2's one-token labels).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import time

from bench.harness.cli import argument_parser
from bench.harness.host import describe_host
from bench.harness.inprocess import default_model_dir, task_data
from bench.harness.results import add_out_argument, save_results
from bench.harness.tables import markdown_table
from controller.templates import Demo


def prompts(n_distinct: int, n_shared: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    data = task_data("sst2", 1000, n_distinct + n_shared + 1, seed)
    rng = random.Random(seed)

    def demos() -> list[Demo]:
        return [Demo(data.query(r), r["label"]) for r in rng.sample(data.pool_rows, 5)]

    queries = [data.query(r) for r in data.test_rows]
    distinct = [data.template.build_prompt(demos(), q) for q in queries[:n_distinct]]
    fixed = demos()
    shared = [data.template.build_prompt(fixed, q) for q in queries[n_distinct:]]
    return distinct, shared, [data.template.continuation(label) for label in data.labels]


def measure(setting: str, args: argparse.Namespace, queue: multiprocessing.Queue) -> None:
    from service.config import Settings
    from service.engine import VllmScorer

    dtype, block = setting.split("/")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scorer = VllmScorer.start(default_model_dir(), Settings(dtype=dtype, block_size=int(block)))
    distinct, shared, continuations = prompts(args.distinct, args.shared, args.seed)

    async def go() -> dict:
        out: dict = {"setting": setting, "distinct_tok_s": []}
        ids = [scorer.tokenize(p) for p in distinct]
        for _ in range(args.repeats):
            await scorer.reset_prefix_cache()
            began = time.perf_counter()
            scored = await scorer.score(ids, continuations)
            seconds = time.perf_counter() - began
            out["distinct_tok_s"].append(sum(s.computed_tokens + s.cached_tokens for s in scored) / seconds)
        await scorer.reset_prefix_cache()
        shared_ids = [scorer.tokenize(p) for p in shared]
        await scorer.score(shared_ids[:1], continuations)  # warm-up: leaves the demonstrations in the cache
        began = time.perf_counter()
        scored = await scorer.score(shared_ids[1:], continuations)
        seconds = time.perf_counter() - began
        total = sum(s.computed_tokens + s.cached_tokens for s in scored)
        out.update(shared_tok_s=total / seconds, shared_cached=sum(s.cached_tokens for s in scored),
                   shared_total=total)
        return out

    try:
        queue.put(asyncio.run(go()))
    finally:
        scorer.shutdown()


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--settings", nargs="+", default=["float32/128", "float32/32", "bfloat16/128"])
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--shared", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rows = []
    print(markdown_table(["setting", "distinct prompts, tok/s (each run)", "shared prefix, tok/s (cached of total)"],
                         []))
    context = multiprocessing.get_context("spawn")  # one engine per process: each setting starts clean
    for setting in args.settings:
        queue = context.Queue()
        worker = context.Process(target=measure, args=(setting, args, queue))
        worker.start()
        row = queue.get()
        worker.join()
        rows.append({**row, "host": describe_host(setting.split("/")[0])})
        print(f"| {setting} | {' / '.join(f'{t:.0f}' for t in row['distinct_tok_s'])} | "
              f"{row['shared_tok_s']:.0f} ({row['shared_cached']} of {row['shared_total']}) |", flush=True)
    save_results(args.out, "engine-settings", rows)


if __name__ == "__main__":
    main()
