"""The labeled demonstration pool of a task, as the ICL logic sees it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from controller.ann import NeighbourIndex


@dataclass(frozen=True)
class LabeledPool:
    """Labeled examples with their normalised embeddings, row i describing example ``ids[i]``."""

    ids: Sequence[str]
    inputs: Sequence[Mapping[str, str]]
    labels: Sequence[str]
    embeddings: np.ndarray  # (n, dim) float32, L2-normalised
    # Optional: the rows' stable keys (ascending; the store's), which an approximate ``index`` is keyed by.
    keys: np.ndarray | None = None
    index: NeighbourIndex | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.inputs) == len(self.labels) == n and self.embeddings.shape[0] == n):
            raise ValueError("pool ids, inputs, labels and embeddings must have the same length")
        if self.keys is not None and len(self.keys) != n:
            raise ValueError("pool keys must have one per row")

    def __len__(self) -> int:
        return len(self.ids)
