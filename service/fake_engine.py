"""A stand-in engine and embedder, for tests and for subprocess runs that must not start vLLM (crash,
fuzz and load tests): ``ICL_ENGINE=fake``.

The fake scorer prefers the label whose verbalizer occurs most often in the query (after the last blank
line), which makes predictions checkable by hand, and refuses an empty prompt as vLLM does; the fake embedder
hashes words into a small vector space. With ``tokens_per_s`` it is an engine of that throughput: prompts are
computed one after another, so concurrent requests queue as they would behind a real engine that cannot keep
up."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from controller.scoring import ScoredPrompt


class FakeScorer:
    model_name = "fake-model"

    def __init__(self, max_model_len: int = 512, prefix_cache: bool = False, tokens_per_s: float | None = None,
                 record_calls: bool = True) -> None:
        self.max_model_len = max_model_len
        # Like vLLM's prefix cache, without blocks: a prompt's longest shared prefix with any earlier prompt
        # is served from the cache (all but its last token). It needs the calls recorded.
        self.prefix_cache = prefix_cache
        self.tokens_per_s = tokens_per_s
        self.record_calls = record_calls or prefix_cache
        # Tokenizing runs in worker threads while scoring reads on the loop: ids only ever grow, under a lock.
        self.vocab: dict[str, int] = {}
        self._words: list[str] = []
        self._vocab_lock = threading.Lock()
        self.calls: list[list[int]] = []
        self.priorities: list[int] = []  # of each score call: batch jobs score at a lower priority (1)
        self.healthy = True
        self.resets = 0
        self._engine = asyncio.Lock() if tokens_per_s else None

    def _id(self, word: str) -> int:
        known = self.vocab.get(word)
        if known is not None:
            return known
        with self._vocab_lock:
            if word not in self.vocab:
                self._words.append(word)
                self.vocab[word] = len(self._words)
            return self.vocab[word]

    def tokenize(self, text: str) -> list[int]:
        return [self._id(w) for w in text.replace("\n", " \n ").split(" ") if w]

    def continuation_ids(self, continuation: str) -> list[int]:
        return [self._id(w) for w in continuation.split()]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self._words[i - 1] for i in ids]

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str],
                    priority: int = 0) -> list[ScoredPrompt]:
        if any(not prompt for prompt in prompts):  # as vLLM refuses one (its VLLMValidationError is a ValueError)
            raise ValueError("The decoder prompt cannot be empty")
        if self.record_calls:
            self.priorities.append(priority)
        if self._engine is not None and self.tokens_per_s is not None:
            async with self._engine:
                await asyncio.sleep(sum(len(p) for p in prompts) / self.tokens_per_s)
        out = []
        for prompt in prompts:
            if self.record_calls:
                self.calls.append(list(prompt))
            words = self.decode(prompt)
            query = words[self._query_start(words):]
            logprobs = [float(sum(w in query for w in c.split())) - 0.1 * i for i, c in enumerate(continuations)]
            cached = self._cached_prefix(prompt) if self.prefix_cache else 0
            out.append(ScoredPrompt(label_logprobs=logprobs, prompt_tokens=len(prompt),
                                    computed_tokens=len(prompt) - cached, cached_tokens=cached))
        return out

    def _cached_prefix(self, prompt: list[int]) -> int:
        best = 0
        for earlier in self.calls[:-1]:
            shared = 0
            for a, b in zip(earlier, prompt, strict=False):
                if a != b:
                    break
                shared += 1
            best = max(best, shared)
        return min(best, len(prompt) - 1)

    @staticmethod
    def _query_start(words: list[str]) -> int:
        """Index after the last blank line (the separator before the query)."""
        for i in range(len(words) - 2, -1, -1):
            if words[i] == words[i + 1] == "\n":
                return i + 2
        return 0

    async def check_health(self) -> None:
        if not self.healthy:
            raise RuntimeError("engine is down")

    def queue_depth(self) -> int:
        return 0

    async def reset_prefix_cache(self) -> None:
        self.resets += 1


class FakeHiddenScorer(FakeScorer):
    """The fake scorer with hidden states: each prompt's query words (after its last blank line), hashed into
    ``HIDDEN_SIZE`` dimensions and counted, the same for the same query whatever its demonstrations."""

    HIDDEN_SIZE = 32

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hidden_calls: list[list[int]] = []

    async def hidden_states(self, prompts: Sequence[list[int]]) -> np.ndarray:
        if any(not prompt for prompt in prompts):
            raise ValueError("The decoder prompt cannot be empty")
        out = np.zeros((len(prompts), self.HIDDEN_SIZE), dtype=np.float32)
        for row, prompt in enumerate(prompts):
            self.hidden_calls.append(list(prompt))
            words = self.decode(prompt)
            for word in words[self._query_start(words):]:
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.HIDDEN_SIZE] += 1.0
        return out


class FakeEmbedder:
    dim = 64
    identity = "fake-embedder:64"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                vectors[i, h % self.dim] += 1.0
            norm = np.linalg.norm(vectors[i])
            vectors[i] = vectors[i] / norm if norm else vectors[i]
            if not norm:
                vectors[i, 0] = 1.0
        return vectors
