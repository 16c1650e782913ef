"""The meta-controller's data, without the service: for held-back training examples and for test items, the
serving-time features and whether the model is right at every candidate count.

    python -m bench.controller_data --datasets trec sst2 cr subj --train-size 1000 --n-test 500

As the service's training job does: held-back examples are classified with demonstrations from the pool
(--pool-size examples); test items with demonstrations from the pool plus the held-back examples (the task's
whole labeled pool at serving time). Writes one .npz per dataset (features, correct, prompt_tokens for
"train" and "test") under --out; `python -m bench.controller_offline` fits and compares controllers on them. With
`--scorer transformers --device cuda` it runs where a GPU but no vLLM is available.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.inprocess import Embeddings, add_engine_arguments, labeled_pool, run, started_scorer, task_data
from bench.harness.results import RESULTS, add_out_argument
from controller.training import collect


async def dataset_matrices(args: argparse.Namespace, scorer, embeddings: Embeddings, dataset: str) -> dict:
    data = task_data(dataset, args.pool_size + args.train_size, args.n_test, args.seed)
    pool_rows, held_rows = data.pool_rows[:args.pool_size], data.pool_rows[args.pool_size:]
    rows = pool_rows + held_rows + data.test_rows
    vectors = embeddings.get(dataset, [data.template.embedding_text(data.query(r)) for r in rows])
    n_pool, n_held = len(pool_rows), len(held_rows)
    out: dict[str, np.ndarray] = {"candidate_k": np.asarray(args.candidate_k)}
    for split, pool_part, query_rows, query_vectors in (
        ("train", slice(0, n_pool), held_rows, vectors[n_pool:n_pool + n_held]),
        ("test", slice(0, n_pool + n_held), data.test_rows, vectors[n_pool + n_held:]),
    ):
        if split not in args.splits:
            continue
        pool = labeled_pool(data, rows[pool_part], vectors[pool_part])
        builder = data.builder(scorer, pool)
        began = time.perf_counter()
        collected = await collect(builder, [data.query(r) for r in query_rows], query_vectors,
                                  [r["label"] for r in query_rows], data.labels, args.candidate_k, "knn",
                                  args.seed, scorer, chunk=args.batch)
        out[f"{split}_features"] = collected.features
        out[f"{split}_correct"] = collected.correct
        out[f"{split}_prompt_tokens"] = collected.prompt_tokens
        out[f"{split}_labels"] = np.asarray([r["label"] for r in query_rows])
        accuracy = dict(zip(args.candidate_k, collected.correct.mean(axis=0).round(3).tolist(), strict=True))
        print(json.dumps({"dataset": dataset, "split": split, "n": len(query_rows), "accuracy_by_k": accuracy,
                          "seconds": round(time.perf_counter() - began, 1)}), flush=True)
    return out


def main() -> None:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", nargs="+", default=["trec", "sst2", "cr", "subj"])
    parser.add_argument("--candidate-k", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", choices=["train", "test"], default=["train", "test"],
                        help="only 'test': items to apply a controller trained elsewhere to (another model's)")
    add_out_argument(parser, RESULTS / "controller-data")
    add_engine_arguments(parser)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        embeddings = Embeddings(args.cache, args.embeddings)
        with started_scorer(args) as scorer:
            for dataset in args.datasets:
                matrices = await dataset_matrices(args, scorer, embeddings, dataset)
                np.savez_compressed(args.out / f"{dataset}-{scorer.model_name}.npz", **matrices)

    run(go())


if __name__ == "__main__":
    main()
