"""Background work admitted to the engine behind interactive predicts: its prompts go in one by one, within a
token window shared by every batch job of the process, each only while no predict has prompts in flight, at a
lower vLLM priority; so a predict waits behind at most the window's tokens, and background prompts never count
against the predict admission limit (no 429 because a batch runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np

from controller.scoring import ScoredPrompt
from service.state import AppState, ServedScorer

# vLLM schedules lower values first (priority scheduling): predicts run at 0.
BATCH_PRIORITY = 1


class TokenWindow:
    """How many prompt tokens batch jobs may have in the engine at once, across every job of the process. A
    predict's prompts wait in the engine behind the batch prompts already there (vLLM schedules running requests
    before waiting ones, priority aside), so this bounds what a predict waits for; a lone prompt larger than the
    window is let through when nothing else is in."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, tokens: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + tokens <= self.tokens)
            self.used += tokens
        try:
            yield
        finally:
            async with self._changed:
                self.used -= tokens
                self._changed.notify_all()


class BackgroundScorer:
    """The engine as a batch job uses it: prompt by prompt, within the process's token window, each waiting for
    in-flight predicts first (at most ``max_yield_s``) and queued behind them in vLLM (priority scheduling);
    everything else is the engine's own."""

    def __init__(self, scorer: ServedScorer, window: TokenWindow, state: AppState, max_yield_s: float) -> None:
        self._scorer = scorer
        self._window = window
        self._state = state
        self._max_yield_s = max_yield_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)

    async def _one(self, prompt: list[int], continuations: Sequence[str]) -> ScoredPrompt:
        await self._state.interactive_quiet(self._max_yield_s)
        async with self._window.hold(len(prompt)):
            return (await self._scorer.score([prompt], continuations, priority=BATCH_PRIORITY))[0]

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str]) -> list[ScoredPrompt]:
        return list(await asyncio.gather(*(self._one(list(p), continuations) for p in prompts)))

    async def _hidden_one(self, prompt: list[int]) -> np.ndarray:
        await self._state.interactive_quiet(self._max_yield_s)
        async with self._window.hold(len(prompt)):
            return (await self._scorer.hidden_states([prompt]))[0]  # type: ignore[attr-defined]

    async def hidden_states(self, prompts: Sequence[list[int]]) -> np.ndarray:
        """The hidden-state engine's reads, prompt by prompt as the label scores are (a predictor only reads them
        where the engine under this one does)."""
        return np.stack(await asyncio.gather(*(self._hidden_one(list(p)) for p in prompts)))
