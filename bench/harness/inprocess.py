"""The ICL library driven directly, without the HTTP service (calibration, calibration_auto, annotation,
controller_data): on vLLM as the service runs it, or on a transformers model (for a GPU machine without vLLM).

Embeddings are cached per dataset under --cache (``emb-<dataset>.npz``, text -> vector), so a machine without
the embedding model can run from a cache made elsewhere (``--embeddings cache-only``)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import REPO
from bench.harness.datasets import load_dataset
from bench.harness.results import ResultsLog, results_path
from controller.domain import DomainWords
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.scoring import LabelScorer, ScoredPrompt
from controller.templates import PromptTemplate

CACHE = REPO / ".benchcache"


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", choices=["vllm", "transformers"], default="vllm",
                        help="vllm: the service's engine (times are measured); transformers: same scores without "
                             "vLLM (e.g. on a GPU machine), identical prompts evaluated once")
    parser.add_argument("--device", default="cpu", help="transformers scorer's device")
    parser.add_argument("--model", help="local model folder (default: the service's default model)")
    parser.add_argument("--cache", type=Path, default=CACHE, help="embedding cache folder")
    parser.add_argument("--embeddings", choices=["compute", "cache-only"], default="compute")


def make_scorer(args: argparse.Namespace) -> Any:
    if args.scorer == "transformers":
        model_dir = Path(args.model) if args.model else default_model_dir()
        from service.transformers_scorer import TransformersScorer

        if args.device.startswith("cuda"):
            import torch

            torch.backends.cuda.matmul.allow_tf32 = True  # ~1e-3 on log-probabilities; reported with results
        return MemoScorer(TransformersScorer(model_dir, device=args.device, max_batch_tokens=131_072))
    from service.config import Settings
    from service.engine import VllmScorer

    settings = Settings()
    return VllmScorer.start(Path(args.model) if args.model else default_model_dir(), settings)


def default_model_dir() -> Path:
    from service.config import Settings
    from service.model_files import resolve_model

    settings = Settings()
    return resolve_model(settings.model, settings.model_cache)


class MemoScorer:
    """Scores each distinct (prompt, continuations) once: configurations that share prompts (the inputs under
    every calibration mode, a set's first strings in every mode) cost one evaluation. Times are meaningless."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer
        self._memo: dict[tuple, ScoredPrompt] = {}
        self.max_model_len = scorer.max_model_len
        self.model_name = scorer.model_name
        self.tokenize = scorer.tokenize
        self.continuation_ids = scorer.continuation_ids

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str]) -> list[ScoredPrompt]:
        conts = tuple(continuations)
        missing = list(dict.fromkeys(tuple(p) for p in prompts if (tuple(p), conts) not in self._memo))
        if missing:
            for key, scored in zip(missing, await self._scorer.score([list(m) for m in missing], conts), strict=True):
                self._memo[(key, conts)] = scored
        return [self._memo[(tuple(p), conts)] for p in prompts]

    async def reset_prefix_cache(self) -> None:
        return None


class Embeddings:
    """Sentence embeddings by text, cached per dataset."""

    def __init__(self, cache: Path, mode: str) -> None:
        self._cache, self._mode = cache, mode
        self._embedder: Any = None

    def _path(self, dataset: str) -> Path:
        return self._cache / f"emb-{dataset}.npz"

    def get(self, dataset: str, texts: Sequence[str]) -> np.ndarray:
        path = self._path(dataset)

        def embedded(rows: list[int]) -> np.ndarray:
            if self._mode == "cache-only":
                raise SystemExit(f"{len(rows)} texts of {dataset} are not in {path}; run once with "
                                 "--embeddings compute where the embedding model is installed")
            if self._embedder is None:
                from service.embedder import SentenceEmbedder

                self._embedder = SentenceEmbedder()
            return self._embedder.embed([texts[i] for i in rows]).astype(np.float16)

        out = cached_vectors(path, [_key(t) for t in texts], embedded).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def cached_vectors(path: Path, keys: Sequence[str], compute: Callable[[list[int]], np.ndarray]) -> np.ndarray:
    """One vector per key, kept in ``path`` (``.npz``: keys, vectors): those not kept yet are ``compute``d, from
    the first position (into ``keys``) of each missing key, and saved with the rest."""
    known: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as data:
            known = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in known:
            first.setdefault(key, i)
    if first:
        known.update(zip(first, compute(list(first.values())), strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[key] for key in keys])


@dataclass
class TaskData:
    """One dataset as a task: template, labels, a labeled pool and test queries with gold labels."""

    dataset: str
    template: PromptTemplate
    labels: list[str]
    pool_rows: list[dict]
    test_rows: list[dict]

    def query(self, row: dict) -> dict[str, str]:
        return {f: str(row[f]) for f in self.template.fields}

    def builder(self, scorer: LabelScorer, pool: LabeledPool) -> PromptBuilder:
        return PromptBuilder.for_scorer(self.template, {label: label for label in self.labels}, pool, scorer)


def task_data(name: str, pool_size: int, n_test: int, seed: int) -> TaskData:
    """The first ``pool_size`` shuffled training rows as the pool, the first ``n_test`` shuffled test rows."""
    data = load_dataset(name, seed)
    return TaskData(name, PromptTemplate.parse(data.template), data.labels, data.train[:pool_size],
                    data.test[:n_test])


def labeled_pool(data: TaskData, rows: Sequence[dict], embeddings: np.ndarray, prefix: str = "") -> LabeledPool:
    return LabeledPool(ids=[f"{prefix}{i}" for i in range(len(rows))], inputs=[data.query(r) for r in rows],
                       labels=[r["label"] for r in rows], embeddings=embeddings)


@dataclass
class EmbeddedTask:
    """A task's rows embedded: its whole pool labeled, the test queries with their vectors and gold labels, and
    the domain words of the pool's and the test items' inputs (a task's labeled and unlabeled examples)."""

    data: TaskData
    vectors: np.ndarray  # the pool's rows, then the test items'
    pool: LabeledPool
    queries: list[dict[str, str]]
    words: DomainWords

    @property
    def n_pool(self) -> int:
        return len(self.data.pool_rows)

    @property
    def pool_vectors(self) -> np.ndarray:
        return self.vectors[:self.n_pool]

    @property
    def query_vectors(self) -> np.ndarray:
        return self.vectors[self.n_pool:]

    @property
    def gold(self) -> list[str]:
        return [r["label"] for r in self.data.test_rows]


def embedded_task(data: TaskData, embeddings: Embeddings) -> EmbeddedTask:
    rows = data.pool_rows + data.test_rows
    vectors = embeddings.get(data.dataset, [data.template.embedding_text(data.query(r)) for r in rows])
    pool = labeled_pool(data, data.pool_rows, vectors[:len(data.pool_rows)])
    queries = [data.query(r) for r in data.test_rows]
    return EmbeddedTask(data, vectors, pool, queries, DomainWords.from_inputs([*pool.inputs, *queries],
                                                                               data.template.fields))


@contextmanager
def started_scorer(args: argparse.Namespace) -> Iterator[Any]:
    """The scorer --scorer asks for, shut down (the vLLM engine) when the block ends."""
    scorer = make_scorer(args)
    try:
        yield scorer
    finally:
        if hasattr(scorer, "shutdown"):
            scorer.shutdown()


def run(coro: Any) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return asyncio.run(coro)


Evaluate = Callable[[argparse.Namespace, Any, Embeddings, ResultsLog], Awaitable[None]]


def run_benchmark(args: argparse.Namespace, name: str, evaluate: Evaluate, summarise: Callable[[list[dict]], None],
                  indent: int | None = 1) -> None:
    """Start the scorer, let ``evaluate`` append result rows to a ``ResultsLog`` (written as it goes, so that a
    run cut short keeps what it did), stop the scorer, print the summary."""
    log = ResultsLog(results_path(args.out, f"{name}-{args.scorer}"), indent=indent)

    async def go() -> None:
        with started_scorer(args) as scorer:
            await evaluate(args, scorer, Embeddings(args.cache, args.embeddings), log)

    run(go())
    summarise(log.rows)
    print(f"\nresults: {log.path}")
