"""The labeled demonstration pool of a task, as the ICL logic sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabeledPool:
    """Labeled examples with their normalised embeddings, row i describing example ``ids[i]``."""

    ids: Sequence[str]
    inputs: Sequence[Mapping[str, str]]
    labels: Sequence[str]
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.inputs) == len(self.labels) == n and self.embeddings.shape[0] == n):
            raise ValueError("pool ids, inputs, labels and embeddings must have the same length")

    def __len__(self) -> int:
        return len(self.ids)
