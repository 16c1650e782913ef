"""What the serving objects share: settings, store, the model runtime (once started), task contexts, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controller.scoring import LabelScorer, ScoredPrompt
from service.config import Settings
from service.contexts import ContextCache
from service.errors import APIError
from service.jobs import JobRunner
from service.metrics import Metrics
from service.orphan_guard import OrphanGuard
from service.store import Store


class TextEmbedder(Protocol):
    dim: int
    identity: str  # which model makes the embeddings: a pool's embeddings are only comparable under one

    def embed(self, texts: list[str]) -> np.ndarray: ...


class ServedScorer(LabelScorer, Protocol):
    model_name: str

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str],
                    priority: int = 0) -> list[ScoredPrompt]:
        """As ``LabelScorer.score``; lower ``priority`` values are scheduled first (predicts 0, batch jobs 1)."""
        ...

    async def check_health(self) -> None: ...

    def queue_depth(self) -> int: ...

    async def reset_prefix_cache(self) -> None: ...


@dataclass
class Runtime:
    scorer: ServedScorer
    embedder: TextEmbedder
    # Kills the engine's processes should this one die without stopping them (service/orphan_guard.py).
    guard: OrphanGuard | None = None


@dataclass
class AppState:
    settings: Settings
    store: Store
    contexts: ContextCache
    jobs: JobRunner
    metrics: Metrics = field(default_factory=Metrics)
    runtime: Runtime | None = None
    startup_error: str | None = None

    inflight_prompts: int = 0

    @contextmanager
    def admit(self, prompts: int) -> Iterator[None]:
        """Admission control: refuse work beyond ``max_inflight_prompts`` with 429 rather than queue it
        without bound. Runs on the event loop only, so the counter needs no lock."""
        limit = self.settings.max_inflight_prompts
        if self.inflight_prompts and self.inflight_prompts + prompts > limit:
            raise APIError(429, f"the service is busy ({self.inflight_prompts} prompts in flight, limit {limit}); "
                           "retry shortly", "overloaded", type="rate_limit_error", headers={"Retry-After": "2"})
        self.inflight_prompts += prompts
        try:
            yield
        finally:
            self.inflight_prompts -= prompts

    async def interactive_quiet(self, max_wait_s: float, poll_s: float = 0.005) -> None:
        """Return once no interactive request has prompts in flight, or after ``max_wait_s``: a batch job's
        prompt goes to the engine then, so a predict waits for what a batch already gave the engine, never for a
        batch's backlog, and steady predict traffic slows a batch down without stopping it."""
        deadline = asyncio.get_running_loop().time() + max_wait_s
        while self.inflight_prompts and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(poll_s)

    def require_runtime(self) -> Runtime:
        if self.runtime is None:
            if self.startup_error:  # it will not come: retrying does not help, restarting the service might
                raise APIError(503, f"the engine failed to start: {self.startup_error}; see the service's log",
                               "engine_failed", type="service_unavailable")
            raise APIError(503, "the engine is not ready yet; retry shortly", "engine_not_ready",
                           type="service_unavailable", headers={"Retry-After": "5"})
        return self.runtime
