"""What the routes share: settings, store, the model runtime (once started), caches and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controller.scoring import LabelScorer
from service.config import Settings
from service.errors import APIError
from service.jobs import JobRunner
from service.metrics import Metrics
from service.pools import PoolCache
from service.store import Store


class TextEmbedder(Protocol):
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class ServedScorer(LabelScorer, Protocol):
    model_name: str

    async def check_health(self) -> None: ...

    def queue_depth(self) -> int: ...


@dataclass
class Runtime:
    scorer: ServedScorer
    embedder: TextEmbedder


@dataclass
class AppState:
    settings: Settings
    store: Store
    pools: PoolCache
    jobs: JobRunner
    metrics: Metrics = field(default_factory=Metrics)
    runtime: Runtime | None = None
    startup_error: str | None = None

    def require_runtime(self) -> Runtime:
        if self.runtime is None:
            why = f" (it failed to start: {self.startup_error})" if self.startup_error else ""
            raise APIError(503, f"the engine is not ready yet{why}; retry shortly", "engine_not_ready",
                           type="service_unavailable", headers={"Retry-After": "5"})
        return self.runtime
