"""The queries a prompt-based calibration estimates a bias from, and how many it spends.

- contextual (Zhao et al. 2021): content-free queries ("N/A", "", "[MASK]"), every input field set to one.
- domain (Fei et al. 2023): strings of random in-domain words (``DomainWords``), each field as long as the
  task's inputs on average.

These are task data and settings, not calibration arithmetic: the service builds a task's words from its pool,
a request's options carry its settings, and the calibrators only read them.

The reference domain setting costs 20 extra prompts per demonstration set, which with per-input demonstrations
is 20 per input. ``DomainSettings`` can make it cheaper: fewer strings per set (each set draws its own), leaving
kNN-retrieved demonstrations uncalibrated, estimates pooled across the batch's sets, at most ``max_sets`` sets
calibrated per batch. Estimates are cached per demonstration set (``controller.bias.BiasCache``), so a
repeated set costs nothing: random selection shares one set among all inputs of a seed, whose estimate is made
once. bench/calibration.py measured which settings keep the gain (bench/README.md): no calibration of kNN
demonstrations, 5 strings for the shared random set and 2 per per-input set did; pooling did not (each set's
own bias is what calibration corrects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

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
    # which random strings under them may mistake for bias: on the shared datasets calibrating them gained
    # little on average, but on some tasks it gains a lot (bench/README.md). Off only in the unfitted default.
    calibrate_knn: bool = True

    def __post_init__(self) -> None:
        if (self.samples < 1 or not 0.0 <= self.pooling <= 1.0 or (self.max_sets is not None and self.max_sets < 1)
                or (self.shared_set_samples is not None and self.shared_set_samples < 1)):
            raise ValueError(f"invalid domain calibration settings: {self}")

    def samples_for(self, shared_set: bool) -> int:
        """Strings per set: ``shared_set_samples`` where every input shares the set, else ``samples``."""
        return (self.shared_set_samples or self.samples) if shared_set else self.samples


REFERENCE_DOMAIN = DomainSettings(samples=20, pooling=0.0)  # Fei et al. 2023, one estimate per demonstration set
# `calibration: "domain"` calibrates the demonstrations an input is served with, kNN sets included, cheaply.
# Chosen with bench/calibration.py (bench/README.md): random demonstrations are one set shared by every input,
# estimated once and cached; on it 5 strings gained as much as the reference's 20 (and 10) for a quarter of the
# calibration prompts; per-input sets get 2 strings, which kept most of the reference's gain on per-input
# random sets; pooling across sets lost it.
DEFAULT_DOMAIN = DomainSettings(samples=2, shared_set_samples=5, pooling=0.0, calibrate_knn=True)
# `calibration: "auto"` before the task is fitted: the shared random set calibrated as above, kNN sets left
# alone (their label mix is evidence about the query; calibrating them gained +0.006 macro-F1 on average for
# 3-12x the engine time), other per-input sets with 2 strings.
UNFITTED_DOMAIN = DomainSettings(samples=2, shared_set_samples=5, pooling=0.0, calibrate_knn=False)


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
        for name in fields:
            split = [str(item.get(name, "")).split() for item in inputs]
            words[name] = tuple(w for ws in split for w in ws)
            lengths[name] = max(1, round(float(np.mean([len(ws) for ws in split])))) if split else 1
        return cls(words=words, mean_lengths=lengths)

    def extended(self, inputs: Sequence[Mapping[str, str]], n_before: int) -> DomainWords:
        """These words after ``inputs`` joined the ``n_before`` inputs they were made of: the same as
        ``from_inputs`` on all of them, without splitting the earlier ones again (a field's bag holds all its
        words, so its length over the inputs is the mean length)."""
        n = n_before + len(inputs)
        words: dict[str, tuple[str, ...]] = {}
        lengths: dict[str, int] = {}
        for name, bag in self.words.items():
            words[name] = bag + tuple(w for item in inputs for w in str(item.get(name, "")).split())
            lengths[name] = max(1, round(len(words[name]) / n)) if n else 1
        return DomainWords(words=words, mean_lengths=lengths)

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
            for name, bag in self.words.items():
                if not bag:
                    query[name] = ""
                    continue
                picks = rng.integers(0, len(bag), size=self.mean_lengths[name])
                query[name] = " ".join(bag[i] for i in picks)
            queries.append(query)
        return queries
