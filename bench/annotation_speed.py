"""Selection time of vote-k and IDEAL as the pool grows: a pool of 10,000 should select in seconds.

    python -m bench.annotation_speed --dataset tweet_eval_offensive --pools 1000 3000 10000 --budgets 18 100

The pool is the dataset's first --pools training inputs after a seeded shuffle, embedded as the service embeds
them (cached under --cache); each method runs --repeats times per pool and budget, and the median wall time is
reported. Embedding is not timed: the service embeds examples when they are added, not when it plans.
No engine: two-stage vote-k's extra cost is the model's pass over the pool (see `annotation.py`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.host import describe_host
from bench.harness.inprocess import CACHE, Embeddings, task_data
from bench.harness.results import add_out_argument, save_results
from bench.harness.tables import markdown_table
from controller.annotation import ideal, random_selection, votek


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--dataset", default="tweet_eval_offensive")
    parser.add_argument("--pools", nargs="+", type=int, default=[1000, 3000, 10000])
    parser.add_argument("--budgets", nargs="+", type=int, default=[18, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=CACHE)
    add_out_argument(parser)
    return parser.parse_args()


def pool_vectors(args: argparse.Namespace) -> np.ndarray:
    """The largest pool's embeddings, in the shuffled order (smaller pools are its first rows)."""
    data = task_data(args.dataset, max(args.pools), 0, args.seed)
    if len(data.pool_rows) < max(args.pools):
        raise SystemExit(f"{args.dataset} has {len(data.pool_rows)} training examples, fewer than {max(args.pools)}")
    texts = [data.template.embedding_text(data.query(r)) for r in data.pool_rows]
    return Embeddings(args.cache, "compute").get(args.dataset, texts)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    vectors = pool_vectors(args)
    methods: dict[str, Callable[[np.ndarray, int], list[int]]] = {
        "votek": lambda v, b: votek(v, b), "ideal": lambda v, b: ideal(v, b, seed=args.seed),
        "random": lambda v, b: random_selection(len(v), b, args.seed)}
    host = describe_host()
    rows: list[dict] = []
    print(markdown_table(["pool", "budget", "method", "median s", "runs"], []))
    for pool in args.pools:
        for budget in args.budgets:
            for name, select in methods.items():
                times = []
                for _ in range(args.repeats):
                    began = time.perf_counter()
                    picks = select(vectors[:pool], budget)
                    times.append(time.perf_counter() - began)
                assert len(set(picks)) == budget
                rows.append({"dataset": args.dataset, "pool": pool, "budget": budget, "method": name,
                             "seconds": times, "median_s": statistics.median(times), "cpus": host["cores"],
                             "host": host})
                print(f"| {pool} | {budget} | {name} | {statistics.median(times):.2f} | {args.repeats} |", flush=True)
    save_results(args.out, "annotation-speed", rows)


if __name__ == "__main__":
    main()
