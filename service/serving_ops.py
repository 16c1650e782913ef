"""Operations: health, the served model, metrics, emptying the engine's prefix cache."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from service.errors import APIError
from service.protocol import ModelCard, ModelList
from service.state import AppState


class OpsServing:
    def __init__(self, state: AppState) -> None:
        self.state = state

    async def health(self) -> None:
        """Nothing when the engine answers; 503 while it starts or when it does not."""
        runtime = self.state.require_runtime()
        try:
            await runtime.scorer.check_health()
        except Exception as exc:
            raise APIError(503, f"the engine does not answer: {exc}", "engine_unhealthy", type="service_unavailable",
                           headers={"Retry-After": "5"}) from exc

    def models(self) -> ModelList:
        runtime = self.state.require_runtime()
        return ModelList(data=[ModelCard(id=runtime.scorer.model_name, created=int(time.time()))])

    def metrics(self) -> bytes:
        """The Prometheus exposition of the service's metrics, the engine's queue depth read now."""
        state = self.state
        if state.runtime is not None:
            state.metrics.engine_queue_depth.set(state.runtime.scorer.queue_depth())
        return generate_latest(state.metrics.registry)

    async def reset_prefix_cache(self) -> None:
        """Empty vLLM's prefix cache, so that a benchmark's runs do not reuse each other's prompts."""
        await self.state.require_runtime().scorer.reset_prefix_cache()
