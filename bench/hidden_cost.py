"""What the hidden-state head costs the engine per input, against label scoring alone, on the same prompts.

    python -m bench.hidden_cost                                  # TREC, pool 1000, 64 test inputs
    python -m bench.hidden_cost --dataset sst2 --n 64 --repeats 5

One task (--dataset, default TREC, as bench/throughput.py) with --pool-size shuffled training examples as its
pool and --n shuffled test inputs (seed 0). Their prompts are built once, as the service builds them (kNN
demonstrations, label names as verbalizers), at k = 1, the hidden-state head's count, and at k = 4, the
unfitted default. Both engines run in this process with the service's engine arguments and CPU environment:
the generate engine scores the labels (``VllmScorer``), the pooling engine reads the last hidden states
(``service/hidden_states.py``); they are timed one after the other, never at once, each from an empty prefix
cache (the generate engine's; the pooling engine reports no cache hits), after one untimed warm-up.

Modes, as bench/throughput.py's: "batch" (all --n prompts at once) and "cC" (C coroutines, each awaiting its
share one prompt at a time). Each configuration is timed --repeats times in rounds and the medians are
reported: seconds per input, and each configuration's seconds against label scoring at k = 1. The head's own
CPU time (the logistic regression on 64 states) is timed too. JSON goes to bench/results/hidden-cost-*.json
with the host's CPU flags and the dtype.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.host import describe_host, host_line
from bench.harness.inprocess import CACHE, Embeddings, labeled_pool, task_data
from bench.harness.raw_engine import clients_of, modes, split
from bench.harness.results import add_out_argument, results_path, write_json
from bench.harness.tables import print_table
from controller.heads import HiddenLinearHead
from controller.hidden_fit import joined
from controller.retrieval import KnnRetriever, cosine_similarities


async def _timed(call: Any, prompts: list[list[int]], mode: str) -> float:
    began = time.perf_counter()
    if mode == "batch":
        await call(prompts)
    else:
        async def client(share: list[list[int]]) -> None:
            for prompt in share:
                await call([prompt])
        await asyncio.gather(*(client(share) for share in split(prompts, clients_of(mode, len(prompts)))))
    return time.perf_counter() - began


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from service.config import Settings
    from service.hidden_states import VllmHiddenScorer
    from service.model_files import resolve_model

    settings = Settings()
    model_dir = resolve_model(settings.model, settings.model_cache)
    data = task_data(args.dataset, args.pool_size, args.n, args.seed)
    rows = data.pool_rows + data.test_rows
    vectors = Embeddings(CACHE, "compute").get(args.dataset, [data.template.embedding_text(data.query(r))
                                                              for r in rows])
    pool = labeled_pool(data, data.pool_rows, vectors[:len(data.pool_rows)])
    scorer = VllmHiddenScorer.start(model_dir, settings)
    try:
        builder = data.builder(scorer, pool)
        similarities = cosine_similarities(vectors[len(data.pool_rows):], pool.embeddings)
        prompts = {k: [builder.tokenize(builder.render(data.query(r), KnnRetriever().select(s, pool.embeddings, k)))
                       for r, s in zip(data.test_rows, similarities, strict=True)] for k in (1, 4)}
        continuations = [data.template.continuation(label) for label in data.labels]

        async def labels(batch: list[list[int]]) -> None:
            await scorer.score(batch, continuations)

        configs = {"label scoring, k=1": (labels, prompts[1]), "label scoring, k=4": (labels, prompts[4]),
                   "hidden state, k=1": (scorer.hidden_states, prompts[1])}
        for call, batch in configs.values():  # warm-up, untimed (and the pooling engine's start)
            await call(batch)
        times: dict[str, dict[str, list[float]]] = {name: {mode: [] for mode in modes(args.clients)}
                                                    for name in configs}
        for _ in range(args.repeats):
            for name, (call, batch) in configs.items():
                for mode in modes(args.clients):
                    await scorer.reset_prefix_cache()
                    times[name][mode].append(await _timed(call, batch, mode))
        states = await scorer.hidden_states(prompts[1])
        features = joined(states, vectors[len(data.pool_rows):])
        gold = np.arange(len(features)) % len(data.labels)
        head = HiddenLinearHead.fit(features, gold, len(data.labels))
        began = time.perf_counter()
        for _ in range(10):
            head.predict_proba(features)
        head_s = (time.perf_counter() - began) / 10
    finally:
        scorer.shutdown()
    base = {mode: statistics.median(times["label scoring, k=1"][mode]) for mode in modes(args.clients)}
    return {"dtype": scorer.dtype, "n": args.n, "prompt_tokens": {str(k): sum(map(len, p)) for k, p in prompts.items()},
            "head_predict_s_per_input": head_s / len(features),
            "configs": {name: {mode: {"median_s": statistics.median(found), "s_per_input":
                                      statistics.median(found) / args.n, "vs_label_scoring_k1":
                                      statistics.median(found) / base[mode], "all_s": found}
                               for mode, found in per_mode.items()} for name, per_mode in times.items()}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name if __spec__ else "bench.hidden_cost")
    parser.add_argument("--dataset", default="trec")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="*", default=[8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    doc = {"benchmark": "hidden_cost", "args": vars(args) | {"out": str(args.out)},
           "host": describe_host(result["dtype"]), **result}
    rows = [[name, mode, f"{figures['median_s']:.2f}", f"{1000 * figures['s_per_input']:.1f}",
             f"{figures['vs_label_scoring_k1']:.2f}"]
            for name, per_mode in result["configs"].items() for mode, figures in per_mode.items()]
    print_table(["configuration", "mode", "median s", "ms per input", "× label scoring at k=1"], rows,
                f"{args.n} {args.dataset} inputs; prompt tokens {result['prompt_tokens']}")
    print(f"\nthe head itself: {1e6 * result['head_predict_s_per_input']:.0f} µs per input; {host_line(doc['host'])}")
    path = write_json(results_path(args.out, "hidden-cost"), doc)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
