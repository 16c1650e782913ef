"""Planning at a 100,000-example pool: what the service spends on CPU per input before the engine.

Builds one task's pool from every input of the shared datasets (all splits; repeated under distinct ids to
reach ``--pool``), embeds them with the service's sentence embedder (cached under ``--cache``), and times,
per input (medians over batches), the parts of ``Predictor.plan``: retrieval (similarities and the pick), the
count choice, prompt building (rendering and tokenizing with the served model's tokenizer), calibration
planning and the response (calibrating made-up scores, the response object). The query embedding is timed
apart. Then a one-example PATCH's context refresh, a whole reload against the update in place; and the
approximate index's recall@k against exact search.

    python -m bench.planning_scale                 # the table of bench/README.md
    python -m bench.planning_scale --embed-only    # fill the embedding cache (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness.cli import argument_parser
from bench.harness.datasets import datasets_dir
from bench.harness.inprocess import CACHE, default_model_dir
from bench.harness.results import write_json


def dataset_inputs(root: Path) -> list[dict[str, str]]:
    """Every input of every split of the shared datasets, as {"text", "label"} (RTE's two fields joined)."""
    out: list[dict[str, str]] = []
    for path in sorted(root.glob("*/*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                text = row.get("text") or f"{row.get('premise', '')} {row.get('hypothesis', '')}".strip()
                out.append({"text": str(text), "label": str(row["label"])})
    return out


def cached_embeddings(texts: list[str], cache: Path) -> np.ndarray:
    """The texts' embeddings by the service's embedder, computed once and kept in ``cache``."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"planning-scale-{digest}.npy"
    if path.exists():
        return np.load(path)
    from service.embedder import SentenceEmbedder

    embedder = SentenceEmbedder(batch_size=128)
    start, parts = time.perf_counter(), []
    for i in range(0, len(texts), 4096):
        parts.append(embedder.embed(texts[i:i + 4096]))
        print(f"embedded {i + len(parts[-1])}/{len(texts)} in {time.perf_counter() - start:.0f} s", flush=True)
    matrix = np.concatenate(parts).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, matrix)
    return matrix


class TokenizerScorer:
    """The served model's tokenizer and window, as the service's scorer has them (planning scores nothing)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        self.max_model_len = int(getattr(config, "max_position_embeddings", 8192))
        self.model_name = model_dir.name
        self._continuations: dict[str, list[int]] = {}

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def continuation_ids(self, continuation: str) -> list[int]:
        if continuation not in self._continuations:
            self._continuations[continuation] = list(self._tokenizer(continuation,
                                                                     add_special_tokens=False)["input_ids"])
        return self._continuations[continuation]

    async def score(self, prompts, continuations):  # noqa: ANN201 - never called: planning only
        raise NotImplementedError


PARTS = ("count choice", "similarities", "pick", "prompts", "calibration", "response")


def timed_plan(context, options, request, queries, embeddings, scorer) -> dict[str, float]:
    """One batch through the service's planning, part by part (``Predictor.plan``'s steps), then the
    calibration of made-up scores and the response object: seconds per part."""
    from controller.counts import QueryBatch
    from controller.planning import build_prompts
    from controller.predictor import Scores
    from controller.retrieval import per_query_seeds, similarities_to_pool
    from controller.scoring import ScoredPrompt
    from service.serving_predict import PredictServing

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    predictor = context.predictor(options)
    t1 = time.perf_counter()
    pool = predictor.builder.pool
    similarities = similarities_to_pool(embeddings, pool, len(queries))
    t2 = time.perf_counter()
    batch = QueryBatch(queries=queries, embeddings=embeddings, similarities=similarities,
                       seeds=per_query_seeds(predictor.seed, len(queries)))
    rows = predictor.counts.demo_rows(predictor.builder, predictor.retriever, batch, predictor.max_prompt_tokens)
    t3 = time.perf_counter()
    prompts = build_prompts(predictor.builder, queries, rows, predictor.retriever.trim, predictor.max_prompt_tokens)
    t4 = time.perf_counter()
    plan = predictor.plan_for(prompts)
    t5 = time.perf_counter()
    n_labels = len(predictor.labels)
    fake = [ScoredPrompt([-1.0 - 0.1 * j for j in range(n_labels)], len(p.token_ids), 1, len(p.token_ids))
            for p in plan.prompts]
    calibration = [ScoredPrompt([-1.0] * n_labels, len(ids), 1, len(ids)) for _, ids in plan.calibration.prompts]
    result = predictor.calibrate(plan, Scores(fake, calibration))
    PredictServing._response(context, request, predictor, result, scorer.model_name)
    t6 = time.perf_counter()
    for part, (a, b) in zip(PARTS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)), strict=True):
        times[part] = b - a
    return times


def fitted_context(context, labels: list[str], dim: int, auto_policy: str = "cascade"):
    """The context with a made-up fit: a cascade (1 then 4 demonstrations), a meta-controller and a fitted
    calibration per count, each fitted on random data (timing only: what they choose does not matter);
    ``auto_policy`` ("cascade" or "controller") serves "auto" with one of them, as the service's setting does."""
    from dataclasses import replace

    from controller.calibration_fit import fit_task_calibration
    from controller.cascade import Cascade
    from controller.features import N_SCALAR_FEATURES
    from controller.meta import MetaController
    from controller.training import TaskFit

    rng = np.random.default_rng(0)
    candidate_k = (0, 1, 2, 4, 8)
    controller = MetaController(candidate_k=candidate_k).fit(
        rng.normal(size=(200, dim + N_SCALAR_FEATURES)), rng.integers(0, 2, size=(200, len(candidate_k))))
    dists = rng.dirichlet(np.ones(len(labels)), size=(200, 2))
    calibration = fit_task_calibration("knn", (1, 4), dists, list(rng.integers(0, len(labels), 200)), len(labels), 0)
    fit = TaskFit(controller=controller, calibration=calibration, model=context.scorer.model_name,
                  cascade=Cascade(stages=(1, 4), thresholds=(0.5,)))
    return replace(context, fit=fit, fit_state="fitted", defaults=replace(context.defaults, auto_policy=auto_policy))


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, __spec__.name)
    parser.add_argument("--datasets", type=Path, default=datasets_dir(), help="the shared datasets' folder")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--texts", type=int, help="only the first N inputs (a quick trial)")
    parser.add_argument("--pool", type=int, default=100_000, help="labeled examples in the pool")
    parser.add_argument("--unlabeled", type=int, default=1000, help="unlabeled examples beside them")
    parser.add_argument("--queries", type=int, default=256, help="inputs held out as queries")
    parser.add_argument("--repeats", type=int, default=5, help="PATCH refreshes timed, each kind")
    parser.add_argument("--batches-1", type=int, default=65, help="batches of one input timed (the first: warm-up)")
    parser.add_argument("--batches-32", type=int, default=9, help="batches of 32 inputs timed (the first: warm-up)")
    parser.add_argument("--ann-min-pool", type=int, default=20_000)
    parser.add_argument("--model", help="model folder whose tokenizer renders prompts (default: the service's)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args()


@dataclass
class Corpus:
    """The inputs, their embeddings, and how they are split into the pool, the unlabeled rows and the queries."""

    rows: list[dict[str, str]]
    embeddings: np.ndarray
    held_out: np.ndarray  # query rows
    pool_rows: np.ndarray  # the rest, repeated (under distinct ids) up to the pool's size
    extra: np.ndarray  # unlabeled rows a PATCH can label
    labels: list[str]

    @property
    def texts(self) -> list[str]:
        return [r["text"] for r in self.rows]


def corpus(rows: list[dict[str, str]], args: argparse.Namespace) -> Corpus:
    embeddings = cached_embeddings([r["text"] for r in rows], args.cache)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    held_out, rest = order[:args.queries], order[args.queries:]
    pool_rows = np.resize(rest, args.pool)
    extra = rng.choice(rest, args.unlabeled, replace=False)
    return Corpus(rows, embeddings, held_out, pool_rows, extra, sorted({r["label"] for r in rows}))


def stored_task(store: Any, data: Corpus) -> Any:
    """The task "scale" with the pool labeled and the extra rows unlabeled."""
    from service.store import NewExample

    task = store.create_task("scale", data.labels, {label: label for label in data.labels},
                             "Input: {text}\nLabel: {label}", None, "\n\n", None)
    start = time.perf_counter()
    texts = data.texts
    everything = [(f"r{i}", int(j), True) for i, j in enumerate(data.pool_rows)]
    everything += [(f"u{i}", int(j), False) for i, j in enumerate(data.extra)]
    for chunk in range(0, len(everything), 10_000):
        store.add_examples(task.id, [NewExample(id=name, input={"text": texts[j]},
                                                label=data.rows[j]["label"] if labeled else None,
                                                embedding=data.embeddings[j])
                                     for name, j, labeled in everything[chunk:chunk + 10_000]])
    print(f"stored in {time.perf_counter() - start:.1f} s", flush=True)
    return task


def patch_refresh(store: Any, task: Any, contexts: Any, context: Any, scorer: TokenizerScorer, data: Corpus,
                  repeats: int) -> dict[str, float]:
    """A PATCH's context refresh: the whole reload (what every pool change cost before) against the update in
    place, for a row joining the labeled pool amid it, for one relabeled and for one added; median ms."""
    from service.store import NewExample

    refresh: dict[str, list[float]] = {"full reload": [], "in place: unlabeled row labeled": [],
                                       "in place: labeled row relabeled": [], "in place: one example added": []}

    def timed_get(kind: str) -> None:
        start = time.perf_counter()
        contexts.get("scale", scorer)
        refresh[kind].append(time.perf_counter() - start)

    for i in range(repeats):
        store.set_label(task.id, f"u{i}", data.labels[0])
        timed_get("in place: unlabeled row labeled")
        store.set_label(task.id, f"r{i}", data.labels[i % len(data.labels)])
        timed_get("in place: labeled row relabeled")
        j = int(data.extra[i])
        store.add_examples(task.id, [NewExample(f"a{i}", {"text": data.texts[j]}, data.rows[j]["label"],
                                                data.embeddings[j])])
        timed_get("in place: one example added")
        start = time.perf_counter()
        contexts._load_pool(context.task, context.template, scorer)
        refresh["full reload"].append(time.perf_counter() - start)
    return {k: 1000 * float(np.median(v)) for k, v in refresh.items()}


def query_embedding_ms(query_texts: list[str]) -> dict[int, float]:
    """The query embedding, apart from planning: ms per input in batches of 1 and of 32."""
    from service.embedder import SentenceEmbedder

    embedder = SentenceEmbedder()
    embedder.embed(query_texts[:8])
    out = {}
    for size in (1, 32):
        start, n = time.perf_counter(), 0
        for b in range(0, min(len(query_texts), 8 * size if size > 1 else 32), size):
            embedder.embed(query_texts[b:b + size])
            n += len(query_texts[b:b + size])
        out[size] = 1000 * (time.perf_counter() - start) / n
    return out


def planning_ms(ctx: Any, options: Any, query_texts: list[str], query_vectors: np.ndarray, size: int,
                n_batches: int, scorer: TokenizerScorer) -> dict[str, float]:
    """Planning part by part, ms per input: medians over batches (on a shared machine a batch that was
    preempted says nothing), the first batch a warm-up."""
    from service.protocol import PredictRequest

    queries = [{"text": t} for t in query_texts]
    per_batch: dict[str, list[float]] = {part: [] for part in PARTS}
    for b in range(n_batches):
        lo = (b * size) % (len(queries) - size + 1)
        request = PredictRequest(inputs=query_texts[lo:lo + size], demos=options.demos, selection=options.selection)
        times = timed_plan(ctx, options, request, queries[lo:lo + size], query_vectors[lo:lo + size], scorer)
        if b == 0:
            continue  # warm-up
        for part, t in times.items():
            per_batch[part].append(t / size)
    row = {part: 1000 * float(np.median(t)) for part, t in per_batch.items()}
    row["total"] = sum(row.values())
    row["mean total"] = 1000 * sum(float(np.mean(t)) for t in per_batch.values())
    return row


def configurations(plain: Any, approximate: Any, labels: list[str], dim: int) -> dict[str, tuple[Any, Any, Any]]:
    """The request kinds timed: exact and approximate search contexts and the options, by name."""
    from controller.predictor import PredictOptions

    def fitted(auto_policy: str) -> tuple[Any, Any]:  # a fresh pair for each configuration, as each is served
        return (fitted_context(plain, labels, dim, auto_policy),
                fitted_context(approximate, labels, dim, auto_policy))

    auto = PredictOptions(demos="auto", selection="knn")
    return {
        "knn, demos 4": (plain, approximate, PredictOptions(demos=4, selection="knn")),
        "auto, unfitted": (plain, approximate, auto),
        "auto, fitted cascade": (*fitted("cascade"), auto),
        "auto, fitted meta-controller": (*fitted("controller"), auto),
    }


def measure(store: Any, task: Any, data: Corpus, args: argparse.Namespace) -> dict:
    from service.contexts import ContextCache

    scorer = TokenizerScorer(Path(args.model) if args.model else default_model_dir())
    results: dict = {"pool": args.pool, "unlabeled": args.unlabeled, "labels": len(data.labels)}
    contexts = ContextCache(store, default_k=4, ann_min_pool=None)
    start = time.perf_counter()
    context = contexts.get("scale", scorer)
    results["first_load_s"] = time.perf_counter() - start
    results["patch_refresh_ms"] = patch_refresh(store, task, contexts, context, scorer, data, args.repeats)
    print(json.dumps(results["patch_refresh_ms"], indent=1), flush=True)

    query_texts = [data.texts[j] for j in data.held_out]
    results["embed_ms_per_input"] = query_embedding_ms(query_texts)
    print("query embedding ms/input:", results["embed_ms_per_input"], flush=True)
    query_vectors = data.embeddings[data.held_out]

    # The approximate index against exact search.
    ann_context = ContextCache(store, default_k=4, ann_min_pool=args.ann_min_pool, ann_candidates=64).get(
        "scale", scorer)
    pool = ann_context.pool.labeled
    start = time.perf_counter()
    pool.index.build(pool.keys, pool.embeddings)
    results["ann_build_s"] = time.perf_counter() - start
    results["ann"] = ann_quality(pool, query_vectors)
    print(f"index built in {results['ann_build_s']:.1f} s;", json.dumps(results["ann"]), flush=True)

    results["planning_ms_per_input"] = {}
    plain = contexts.get("scale", scorer)
    for name, (exact, approximate, options) in configurations(plain, ann_context, data.labels,
                                                                data.embeddings.shape[1]).items():
        for search, ctx in (("exact", exact), ("approximate", approximate)):
            for size in (1, 32):
                row = planning_ms(ctx, options, query_texts, query_vectors, size,
                                  args.batches_1 if size == 1 else args.batches_32, scorer)
                results["planning_ms_per_input"][f"{name} | {search} | batch {size}"] = row
                print(f"{name:30s} {search:11s} batch {size:2d}: " +
                      " ".join(f"{part} {v:.3f}" for part, v in row.items()), flush=True)
    return results


def main() -> None:
    args = parse_args()
    rows = dataset_inputs(args.datasets)[:args.texts]
    if args.embed_only:
        cached_embeddings([r["text"] for r in rows], args.cache)
        return
    from service.store import Store

    data = corpus(rows, args)
    print(f"{len(rows)} inputs, pool {args.pool} labeled + {args.unlabeled} unlabeled, {len(data.labels)} labels, "
          f"{len(data.held_out)} held-out queries", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        try:
            results = measure(store, stored_task(store, data), data, args)
        finally:
            store.close()
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results, indent=1))


def ann_quality(pool, queries: np.ndarray) -> dict:
    """recall@k of the index's candidates against exact search (a row counts as found when it is as similar
    as the exact k-th: the pool repeats rows, so ties are many), and the time per query."""
    from controller.retrieval import knn, pool_similarities

    out: dict = {}
    exact_start = time.perf_counter()
    exact = pool_similarities(queries, pool.embeddings, len(queries))
    out["exact_ms_per_query_batch"] = 1000 * (time.perf_counter() - exact_start) / len(queries)
    start = time.perf_counter()
    for q in queries[:64]:
        pool_similarities(q[None], pool.embeddings, 1)
    out["exact_ms_per_query_single"] = 1000 * (time.perf_counter() - start) / 64
    start = time.perf_counter()
    approx = pool.index.similarities(queries, pool.keys, pool.embeddings)
    out["ann_ms_per_query_batch"] = 1000 * (time.perf_counter() - start) / len(queries)
    start = time.perf_counter()
    for q in queries[:64]:
        pool.index.similarities(q[None], pool.keys, pool.embeddings)
    out["ann_ms_per_query_single"] = 1000 * (time.perf_counter() - start) / 64
    for k in (1, 4, 16):
        hits = []
        for a, e in zip(approx, exact, strict=True):
            kth = e[knn(e, k)[-1]]
            hits.append(np.sum(e[knn(a, k)] >= kth - 1e-6) / k)
        out[f"recall@{k}"] = float(np.mean(hits))
    return out


if __name__ == "__main__":
    main()
