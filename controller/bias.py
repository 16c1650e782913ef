"""Label-bias arithmetic: estimate a bias from label distributions, divide it out, pool estimates, cache them.

Every calibration (the calibrators that serve requests, and the fit that chooses among them per count) does the
same sums: the bias is a mean label distribution, and a calibrated distribution is ``p / bias``, renormalised.
They live here, apart from the calibrators, so that the fit can use them without importing what serves the
requests, and either can be read alone."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence

import numpy as np


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
