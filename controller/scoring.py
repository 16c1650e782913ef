"""Label scoring: the probability of each label's whole verbalizer after a prompt, normalised over labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ScoredPrompt:
    """The engine's answer for one prompt."""

    label_logprobs: list[float]  # log P(verbalizer tokens | prompt), one per label, unnormalised
    prompt_tokens: int  # tokens of the prompt itself
    computed_tokens: int  # tokens the engine computed for it (label continuations included), less cache hits
    cached_tokens: int  # tokens served from the prefix cache


class LabelScorer(Protocol):
    """What the ICL logic needs from a model: its tokenizer, its window, and label log-probabilities."""

    max_model_len: int

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt, special tokens (such as BOS) included as the model expects."""
        ...

    def continuation_ids(self, continuation: str) -> list[int]:
        """Token ids of a label's continuation, as it follows a prompt."""
        ...

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str]) -> list[ScoredPrompt]:
        """For each prompt, log P(continuation | prompt) of every continuation."""
        ...


def normalise_label_logprobs(label_logprobs: Sequence[float]) -> np.ndarray:
    """Softmax over labels of whole-verbalizer log-probabilities."""
    values = np.asarray(label_logprobs, dtype=np.float64)
    values = values - values.max()
    probs = np.exp(values)
    return probs / probs.sum()


def continuation_requests(continuations: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """The engine requests needed to score whole continuations: each distinct token prefix, mapped to the
    tokens whose log-probability must be read right after it.

    Single-token labels need one request (the empty prefix); a multi-token label adds one per extra token,
    and those share the prompt's prefix-cache blocks."""
    requests: dict[tuple[int, ...], list[int]] = {}
    for tokens in continuations:
        for j, token in enumerate(tokens):
            nexts = requests.setdefault(tuple(tokens[:j]), [])
            if token not in nexts:
                nexts.append(token)
    return requests


def continuation_logprobs(
    continuations: Sequence[Sequence[int]], read: dict[tuple[int, ...], dict[int, float]]
) -> list[float]:
    """Sum, for each continuation, the log-probabilities read after each of its prefixes."""
    return [sum(read[tuple(tokens[:j])][t] for j, t in enumerate(tokens)) for tokens in continuations]
