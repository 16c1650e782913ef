"""Label-bias calibration: estimate the label bias of a prompt's context and divide it out.

- contextual (Zhao et al. 2021): the bias is the label distribution for content-free queries ("N/A", "", "[MASK]")
  under the same demonstrations.
- domain (Fei et al. 2023): the bias is the mean label distribution for strings of random in-domain words,
  as long as the task's inputs on average, under the same demonstrations.
Either way the calibrated distribution is ``p / bias``, renormalised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Calibration = Literal["none", "contextual", "domain"]

CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")
DOMAIN_SAMPLES = 20  # the reference's number of random-word strings per demonstration set


def content_free_queries(fields: Sequence[str]) -> list[dict[str, str]]:
    """One query per content-free string, every input field set to it."""
    return [dict.fromkeys(fields, text) for text in CONTENT_FREE_INPUTS]


@dataclass(frozen=True)
class DomainWords:
    """The words of a task's inputs, per field, and each field's average length in words."""

    words: Mapping[str, tuple[str, ...]]
    mean_lengths: Mapping[str, int]

    @classmethod
    def from_inputs(cls, inputs: Sequence[Mapping[str, str]], fields: Sequence[str]) -> DomainWords:
        words: dict[str, tuple[str, ...]] = {}
        lengths: dict[str, int] = {}
        for field in fields:
            split = [str(item.get(field, "")).split() for item in inputs]
            words[field] = tuple(w for ws in split for w in ws)
            lengths[field] = max(1, round(float(np.mean([len(ws) for ws in split])))) if split else 1
        return cls(words=words, mean_lengths=lengths)

    @property
    def empty(self) -> bool:
        return not any(self.words.values())

    def sample(self, n: int, seed: int) -> list[dict[str, str]]:
        """n queries of random in-domain words, each field as long as that field's inputs on average.

        Words are drawn with replacement from the bag of all input words, so frequent words come up
        as often as they do in the domain."""
        rng = np.random.default_rng(seed)
        queries: list[dict[str, str]] = []
        for _ in range(n):
            query: dict[str, str] = {}
            for field, bag in self.words.items():
                if not bag:
                    query[field] = ""
                    continue
                picks = rng.integers(0, len(bag), size=self.mean_lengths[field])
                query[field] = " ".join(bag[i] for i in picks)
            queries.append(query)
        return queries


def estimate_bias(probs: np.ndarray) -> np.ndarray:
    """Mean label distribution over the calibration queries, (n_queries, n_labels) -> (n_labels,)."""
    bias = np.asarray(probs, dtype=np.float64).mean(axis=0)
    return bias / bias.sum()


def apply_bias(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Divide each label's probability by its bias and renormalise (Zhao et al.'s diagonal W = diag(bias)^-1)."""
    probs = np.asarray(probs, dtype=np.float64)
    adjusted = probs / np.clip(bias, 1e-12, None)
    return adjusted / adjusted.sum(axis=-1, keepdims=True)
