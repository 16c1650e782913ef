"""Serving-time cost of the meta-controller and the allocator per input, without the engine.

    python bench/controller_overhead.py --dataset sst2 --pool-size 1000 --batch 32 256

It times what `demos: "auto"` adds to a request before the engine sees it: the controller's features
(including one zero-shot tokenization per input), its predicted accuracies, pricing every candidate count
(demonstrations retrieved per count, tokens estimated from cached per-demonstration counts), the allocator
and tokenizing the chosen prompts, with the real tokenizer and embeddings of the default model. The last
column includes building the prompts that any fixed count would also build. Compare with the engine's time
per input in bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_http import load, manifest_labels  # noqa: E402

from controller.counts import ControllerCount, QueryBatch  # noqa: E402
from controller.features import features_for  # noqa: E402
from controller.meta import MetaController  # noqa: E402
from controller.planning import PromptBuilder, build_prompts  # noqa: E402
from controller.pool import LabeledPool  # noqa: E402
from controller.retrieval import KnnRetriever, pool_similarities  # noqa: E402
from controller.templates import PromptTemplate  # noqa: E402
from service.config import Settings  # noqa: E402
from service.embedder import SentenceEmbedder  # noqa: E402
from service.model_files import resolve_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="sst2")
    parser.add_argument("--pool-size", type=int, default=1000)
    parser.add_argument("--batch", nargs="+", type=int, default=[32, 256])
    parser.add_argument("--candidate-k", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(settings.model, settings.model_cache)))
    embedder = SentenceEmbedder()
    labels = manifest_labels(args.dataset)
    train = load(args.dataset, "train")
    random.Random(0).shuffle(train)
    rows = train[:args.pool_size]
    template = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    pool = LabeledPool(ids=[str(i) for i in range(len(rows))], inputs=[{"text": r["text"]} for r in rows],
                       labels=[r["label"] for r in rows], embeddings=embedder.embed([r["text"] for r in rows]))
    builder = PromptBuilder(template, {label: label for label in labels}, pool,
                            lambda text: tokenizer(text)["input_ids"], 8192, 4)
    rng = np.random.default_rng(0)
    controller = MetaController(candidate_k=tuple(args.candidate_k)).fit(
        rng.normal(size=(200, pool.embeddings.shape[1] + 6)), rng.integers(0, 2, size=(200, len(args.candidate_k))))
    policy, retriever = ControllerCount(controller, labels), KnnRetriever()
    test = load(args.dataset, "test")
    print("| batch | features ms/input | predict_proba ms/input | price every count ms/input | "
          "allocate + build chosen prompts ms/input | total ms/input |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch:
        queries = [{"text": r["text"]} for r in test[:batch]]
        embeddings = embedder.embed([q["text"] for q in queries])
        timings: dict[str, list[float]] = {"features": [], "proba": [], "price": [], "allocate": []}
        for _ in range(args.repeats):  # the steps of ControllerCount.demo_rows, timed one by one
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
            for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                timings[key].append(1000 * value / batch)
        med = {k: statistics.median(v) for k, v in timings.items()}
        print(f"| {batch} | {med['features']:.2f} | {med['proba']:.3f} | {med['price']:.2f} | {med['allocate']:.3f} | "
              f"{sum(med.values()):.2f} |")


if __name__ == "__main__":
    main()
