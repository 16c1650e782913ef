"""vLLM's own ``AsyncLLM`` in this process on the very prompts the service built: the engine's best case, against
which the service's throughput is read (bench/throughput.py, bench/batch_jobs.py).

It takes the service's engine arguments (``service.engine.engine_arguments``: model folder, dtype, block size,
prefix caching, scheduling policy), CPU environment (``apply_cpu_defaults``) and label token ids, and reads one
request per distinct label-token prefix (``SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=...,
detokenize=False)``), as the service scores labels. Never run it while a server's engine runs: they would share
the cores."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness.host import load_1m
from controller.scoring import continuation_requests
from controller.templates import PromptTemplate

ENGINE_ENV = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """``items`` cut into ``parts`` contiguous shares of (almost) equal size, in order; no share empty."""
    parts = min(parts, len(items))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out


def modes(clients: Sequence[int]) -> list[str]:
    """The load patterns timed: "batch" (every input at once) and "cC" (C clients, one input per request)."""
    return ["batch", *(f"c{c}" for c in clients)]


def clients_of(mode: str, n: int) -> int:
    return n if mode == "batch" else int(mode[1:])


def engine_config() -> tuple[Path, dict[str, Any]]:
    """The model folder and the engine arguments the service's settings give (the same environment read), with
    the CPU environment the service sets applied to this process too."""
    from service.config import Settings
    from service.engine import apply_cpu_defaults, engine_arguments, is_cpu_build
    from service.model_files import resolve_model

    settings = Settings()
    on_cpu = is_cpu_build()
    if on_cpu:
        apply_cpu_defaults(settings)
    model_dir = resolve_model(settings.model, settings.model_cache)
    return model_dir, engine_arguments(model_dir, settings, on_cpu)


def service_tokens(model_dir: Path, prompts: Sequence[str], prompt_tokens: Sequence[int], template: str,
                   labels: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """The service's prompts as token ids, tokenized as the service tokenizes them (the whole prompt, special
    tokens as the model adds them), and each label's continuation ids. Stops the benchmark when a prompt's
    count differs from the service's ``prompt_tokens``: the two engines would not read the same tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = [list(tokenizer(text, add_special_tokens=True)["input_ids"]) for text in prompts]
    mismatched = [i for i, (one, n) in enumerate(zip(ids, prompt_tokens, strict=True)) if len(one) != n]
    if mismatched:
        raise SystemExit(f"prompts {mismatched[:5]}: token counts differ from the service's prompt_tokens")
    parsed = PromptTemplate.parse(template)
    continuations = [list(tokenizer(parsed.continuation(label), add_special_tokens=False)["input_ids"])
                     for label in labels]
    return ids, continuations


class RawEngine:
    """One ``AsyncLLM`` scoring label continuations at the end of each prompt."""

    def __init__(self, continuations: list[list[int]]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.model_dir, self.arguments = engine_config()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.arguments))
        self.continuations = continuations
        self.requests = continuation_requests(continuations)  # what every prompt needs read: one per prefix
        self.counter = 0

    def describe(self) -> dict[str, Any]:
        config = self.engine.vllm_config
        return {"dtype": str(self.engine.model_config.dtype).removeprefix("torch."),
                "block_size": config.cache_config.block_size, "arguments": self.arguments,
                "model_dir": str(self.model_dir), "env": {k: os.environ.get(k) for k in ENGINE_ENV},
                "max_num_batched_tokens": config.scheduler_config.max_num_batched_tokens,
                "max_num_seqs": config.scheduler_config.max_num_seqs}

    async def _read(self, ids: list[int], wanted: list[int]) -> tuple[dict[int, float], int]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self.counter += 1
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted, detokenize=False)
        final = None
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                                 request_id=f"raw-{self.counter}"):
            final = output
        assert final is not None and final.outputs[0].logprobs
        step = final.outputs[0].logprobs[0]
        return {t: float(step[t].logprob) for t in wanted}, int(final.num_cached_tokens or 0)

    async def score(self, ids: list[int]) -> tuple[list[float], int]:
        """Each label's log-probability after the prompt, and the prompt tokens read from the prefix cache."""
        answers = await asyncio.gather(*(self._read(ids + list(p), wanted) for p, wanted in self.requests.items()))
        got = dict(zip(self.requests, (a[0] for a in answers), strict=True))
        logprobs = [sum(got[tuple(c[:j])][t] for j, t in enumerate(c)) for c in self.continuations]
        return logprobs, sum(a[1] for a in answers)

    async def timing(self, mode: str, prompts: list[list[int]]) -> dict[str, Any]:
        """Every prompt under ``mode``'s load pattern, from an empty prefix cache."""
        await self.engine.reset_prefix_cache()
        results: dict[int, tuple[list[float], int]] = {}

        async def client_loop(share: list[int]) -> None:
            for i in share:
                results[i] = await self.score(prompts[i])

        load_before = load_1m()
        began = time.perf_counter()
        if mode == "batch":
            results.update(enumerate(await asyncio.gather(*(self.score(p) for p in prompts))))
        else:
            await asyncio.gather(*(client_loop(s) for s in split(range(len(prompts)), clients_of(mode, len(prompts)))))
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "load_before": load_before, "load_after": load_1m(),
                "cached_tokens": sum(r[1] for r in results.values()),
                "logprobs": [results[i][0] for i in range(len(prompts))]}

    def shutdown(self) -> None:
        self.engine.shutdown()
        # Dropped now, not collected at interpreter exit (where its __del__ finds the modules gone): a frame of
        # the engine's start outlives it and holds this object.
        self.engine = None


async def raw_runs(prompts: list[list[int]], continuations: list[list[int]], timed: Sequence[str],
                   repeats: int) -> dict[str, Any]:
    """After one untimed batch (warm-up), ``repeats`` rounds over the ``timed`` modes (rounds, so that noise on a
    shared machine spreads over every mode): the engine's settings and each mode's runs."""
    raw = RawEngine(continuations)
    out: dict[str, Any] = {**raw.describe(), "runs": {m: [] for m in timed}}
    try:
        await raw.timing("batch", prompts)
        for repeat in range(repeats):
            for mode in timed:
                run = await raw.timing(mode, prompts)
                out["runs"][mode].append(run)
                print(f"raw {mode} #{repeat + 1}: {run['seconds']:.2f} s (load {run['load_before']:.2f} -> "
                      f"{run['load_after']:.2f})", flush=True)
    finally:
        raw.shutdown()
    return out
