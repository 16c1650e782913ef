"""Label-bias calibration: estimate the label bias of a prompt's context and divide it out.

- contextual (Zhao et al. 2021): the bias is the label distribution for content-free queries ("N/A", "", "[MASK]")
  under the same demonstrations.
- domain (Fei et al. 2023): the bias is the mean label distribution for strings of random in-domain words,
  as long as the task's inputs on average, under the same demonstrations.
Either way the calibrated distribution is ``p / bias``, renormalised.

The reference domain setting costs 20 extra prompts per demonstration set, which with per-input demonstrations
is 20 per input. ``DomainSettings`` can make it cheaper: fewer strings per set (each set draws its own), leaving
kNN-retrieved demonstrations uncalibrated, estimates pooled across the batch's sets, at most ``max_sets`` sets
calibrated per batch. Estimates are cached per demonstration set (``BiasCache``), so a repeated set costs
nothing: random selection shares one set among all inputs of a seed, whose estimate is made once.
bench/calibration.py measured which settings keep the gain (bench/README.md): no calibration of kNN
demonstrations, 5 strings for the shared random set and 2 per per-input set did; pooling did not (each set's
own bias is what calibration corrects).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Calibration = Literal["none", "contextual", "domain"]

CONTENT_FREE_INPUTS: tuple[str, ...] = ("N/A", "", "[MASK]")


@dataclass(frozen=True)
class DomainSettings:
    """How domain-context calibration spends engine time."""

    samples: int = 20  # random-word strings per calibrated demonstration set
    # Strings for a set that every input shares (random selection: one set per seed and pool). Its estimate
    # is cached, so many strings cost once per set, not per input. None: ``samples``.
    shared_set_samples: int | None = None
    pooling: float = 0.0  # weight of the batch-wide (log-space mean) estimate in each set's bias; 0 = own only
    max_sets: int | None = None  # demonstration sets calibrated per batch; the others get the batch-wide estimate
    # Whether kNN-retrieved demonstrations are calibrated too. Their label mix is evidence about the query,
    # which random strings under them mistake for bias: measured, calibrating them lost macro-F1 on average.
    calibrate_knn: bool = True

    def __post_init__(self) -> None:
        if (self.samples < 1 or not 0.0 <= self.pooling <= 1.0 or (self.max_sets is not None and self.max_sets < 1)
                or (self.shared_set_samples is not None and self.shared_set_samples < 1)):
            raise ValueError(f"invalid domain calibration settings: {self}")

    def samples_for(self, shared_set: bool) -> int:
        """Strings per set: ``shared_set_samples`` where every input shares the set, else ``samples``."""
        return (self.shared_set_samples or self.samples) if shared_set else self.samples


REFERENCE_DOMAIN = DomainSettings(samples=20, pooling=0.0)  # Fei et al. 2023, one estimate per demonstration set
# Chosen with bench/calibration.py (bench/README.md): random demonstrations are one set shared by every input,
# estimated once and cached; on it 5 strings gained as much as the reference's 20 (and 10) for a quarter of the
# calibration prompts. Calibrating kNN demonstrations gained little on average for 3-12x the engine time
# (reference settings); per-input sets (diverse) get 2 strings, which kept most of the reference's gain on
# per-input random sets; pooling across sets lost it.
DEFAULT_DOMAIN = DomainSettings(samples=2, shared_set_samples=5, pooling=0.0, calibrate_knn=False)


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

    def sample(self, n: int, seed: int | Sequence[int]) -> list[dict[str, str]]:
        """n queries of random in-domain words, each field as long as that field's inputs on average.

        Words are drawn with replacement from the bag of all input words, so frequent words come up
        as often as they do in the domain. The first m of n strings are the m strings of the same seed."""
        rng = np.random.default_rng(list(seed) if isinstance(seed, Sequence) else seed)
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


def pool_biases(own: Mapping[Hashable, np.ndarray], keys: Sequence[Hashable],
                pooling: float) -> dict[Hashable, np.ndarray]:
    """Each key's bias: its own estimate shrunk toward the log-space mean of all own estimates by ``pooling``;
    keys without an own estimate get the mean itself. No estimates at all: no biases."""
    if not own:
        return {}
    logs = {key: np.log(np.clip(bias, 1e-12, None)) for key, bias in own.items()}
    shared = np.mean(np.stack(list(logs.values())), axis=0)
    out: dict[Hashable, np.ndarray] = {}
    for key in keys:
        mixed = shared if key not in logs else (1.0 - pooling) * logs[key] + pooling * shared
        bias = np.exp(mixed - mixed.max())
        out[key] = bias / bias.sum()
    return out


class BiasCache:
    """Bias estimates by (demonstration set, settings, seed), least recently used dropped past ``max_entries``.

    Valid for one pool version: pool rows are its keys."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._entries: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()  # planning threads read while the event loop writes

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            bias = self._entries.get(key)
            if bias is not None:
                self._entries.move_to_end(key)
            return bias

    def put(self, key: Hashable, bias: np.ndarray) -> None:
        with self._lock:
            self._entries[key] = bias
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
