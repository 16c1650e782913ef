"""Serving-time features for the meta-controller: cheap, computed from what retrieval already has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from controller.planning import PromptBuilder
from controller.retrieval import knn, similarities_to_pool

N_NEIGHBOURS = 8
N_SCALAR_FEATURES = 6  # the columns after the embedding


def query_features(
    query_embeddings: np.ndarray,
    similarities: np.ndarray,
    pool_label_codes: Sequence[int],
    n_labels: int,
    query_tokens: Sequence[int],
) -> np.ndarray:
    """(n, dim + 6): the input's embedding, its length, and what its nearest pool examples say:
    top-1 and mean top-8 similarity, their spread, the majority label's share among the top 8 (weighted by
    similarity) and the entropy of that label vote."""
    n = len(query_embeddings)
    m = min(N_NEIGHBOURS, similarities.shape[1]) if similarities.ndim == 2 else 0
    extra = np.zeros((n, N_SCALAR_FEATURES), dtype=np.float64)
    extra[:, 0] = np.log1p(np.asarray(query_tokens, dtype=np.float64))
    if m:
        top = np.stack([knn(row, m) for row in similarities])
        top_sims = np.take_along_axis(similarities, top, axis=1)
        weights = np.clip(top_sims, 1e-6, None)
        votes = np.zeros((n, n_labels))
        top_codes = np.fromiter((pool_label_codes[int(r)] for r in top.ravel()), dtype=np.int64, count=top.size)
        np.add.at(votes, (np.repeat(np.arange(n), m), top_codes), weights.ravel())
        share = votes / votes.sum(axis=1, keepdims=True)
        entropy = -(share * np.log(np.clip(share, 1e-12, None))).sum(axis=1) / max(np.log(n_labels), 1e-12)
        extra[:, 1] = top_sims[:, 0]
        extra[:, 2] = top_sims.mean(axis=1)
        extra[:, 3] = top_sims.std(axis=1)
        extra[:, 4] = share.max(axis=1)
        extra[:, 5] = entropy
    return np.hstack([np.asarray(query_embeddings, dtype=np.float64), extra])


def features_for(builder: PromptBuilder, labels: Sequence[str], queries: Sequence[Mapping[str, str]],
                 embeddings: np.ndarray, similarities: np.ndarray | None = None,
                 zero_shot_tokens: Sequence[int] | None = None) -> np.ndarray:
    """``query_features`` of queries against the builder's pool (similarities and zero-shot prompt lengths
    computed here unless the caller has them)."""
    pool = builder.pool
    if similarities is None:
        similarities = similarities_to_pool(embeddings, pool, len(queries))
    if zero_shot_tokens is None:
        zero_shot_tokens = [builder.zero_shot_tokens(q) for q in queries]
    return query_features(embeddings, similarities, _LabelCodes(labels, pool.labels), len(labels), zero_shot_tokens)


class _LabelCodes(Sequence[int]):
    """Pool rows' label codes, looked up as read: the features read the top rows', not a large pool's all."""

    def __init__(self, labels: Sequence[str], pool_labels: Sequence[str]) -> None:
        self._codes = {label: code for code, label in enumerate(labels)}
        self._pool_labels = pool_labels

    def __getitem__(self, row: int) -> int:  # type: ignore[override]
        return self._codes[self._pool_labels[row]]

    def __len__(self) -> int:
        return len(self._pool_labels)
