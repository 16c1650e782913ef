"""Serving-time cost of the meta-controller and the allocator per input, without the engine.

    python -m bench.controller_overhead --dataset sst2 --pool-size 1000 --batch 32 256

It times what `demos: "auto"` adds to a request before the engine sees it: the controller's features
(including one zero-shot tokenization per input), its predicted accuracies, pricing every candidate count
(demonstrations retrieved per count, tokens estimated from cached per-demonstration counts), the allocator
and tokenizing the chosen prompts, with the real tokenizer and embeddings of the default model. The last
column includes building the prompts that any fixed count would also build. Compare with the engine's time
per input in bench/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.datasets import DEFAULT_TEMPLATE, load, manifest_labels, shuffled
from bench.harness.inprocess import default_model_dir
from bench.harness.tables import markdown_table
from controller.counts import ControllerCount, QueryBatch
from controller.features import features_for
from controller.meta import MetaController
from controller.planning import PromptBuilder, build_prompts
from controller.pool import LabeledPool
from controller.retrieval import KnnRetriever, pool_similarities
from controller.templates import PromptTemplate

STEPS = ("features", "proba", "price", "allocate")


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--candidate-k", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


def timed_steps(builder: PromptBuilder, controller: MetaController, labels: list[str], queries: list[dict],
                embeddings: np.ndarray) -> tuple[float, ...]:
    """The steps of ``ControllerCount.demo_rows``, timed one by one: seconds of each of ``STEPS``."""
    batch = len(queries)
    policy, retriever = ControllerCount(controller, labels), KnnRetriever()
    pool = builder.pool
    t0 = time.perf_counter()
    zero_shot = [builder.zero_shot_tokens(q) for q in queries]
    similarities = pool_similarities(embeddings, pool.embeddings, batch)
    features = features_for(builder, labels, queries, embeddings, similarities, zero_shot)
    t1 = time.perf_counter()
    expected = controller.predict_proba(features)
    t2 = time.perf_counter()
    query_batch = QueryBatch(queries, embeddings, similarities, [0] * batch)
    options, costs = policy.priced_options(builder, retriever, query_batch, zero_shot)
    t3 = time.perf_counter()
    controller.choose(expected, costs)
    choice = controller.choose(expected, costs, int(costs[:, 2].sum()))
    build_prompts(builder, queries, [options[j][i] for i, j in enumerate(choice)], retriever.trim)
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


def main() -> None:
    args = parse_args()
    from transformers import AutoTokenizer

    from service.embedder import SentenceEmbedder

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()))
    embedder = SentenceEmbedder()
    labels = manifest_labels(args.dataset)
    rows = shuffled(load(args.dataset, "train"), 0)[:args.pool_size]
    pool = LabeledPool(ids=[str(i) for i in range(len(rows))], inputs=[{"text": r["text"]} for r in rows],
                       labels=[r["label"] for r in rows], embeddings=embedder.embed([r["text"] for r in rows]))
    builder = PromptBuilder(PromptTemplate.parse(DEFAULT_TEMPLATE), {label: label for label in labels}, pool,
                            lambda text: tokenizer(text)["input_ids"], 8192, 4)
    rng = np.random.default_rng(0)
    controller = MetaController(candidate_k=tuple(args.candidate_k)).fit(
        rng.normal(size=(200, pool.embeddings.shape[1] + 6)), rng.integers(0, 2, size=(200, len(args.candidate_k))))
    test = load(args.dataset, "test")  # in file order
    print(markdown_table(["batch", "features ms/input", "predict_proba ms/input", "price every count ms/input",
                          "allocate + build chosen prompts ms/input", "total ms/input"], []))
    for batch in args.batch:
        queries = [{"text": r["text"]} for r in test[:batch]]
        embeddings = embedder.embed([q["text"] for q in queries])
        timings: dict[str, list[float]] = {step: [] for step in STEPS}
        for _ in range(args.repeats):
            for step, seconds in zip(STEPS, timed_steps(builder, controller, labels, queries, embeddings), strict=True):
                timings[step].append(1000 * seconds / batch)
        med = {k: statistics.median(v) for k, v in timings.items()}
        print(f"| {batch} | {med['features']:.2f} | {med['proba']:.3f} | {med['price']:.2f} | {med['allocate']:.3f} | "
              f"{sum(med.values()):.2f} |", flush=True)


if __name__ == "__main__":
    main()
