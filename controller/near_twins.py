"""Near-twins: examples that are copies of each other, or nearly (the same text re-punctuated, the same story
from another wire). A fit must not let a held-back example draw its own near-twin as a demonstration, since
kNN would then flatter the fit's estimate; and a task says how many groups of them its pool holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Embedding cosine above which two examples are near-twins (the same text copied or re-punctuated, the same
# story from another wire), measured by bench/near_twins.py on the shared datasets: from 0.95 up, pairs'
# labels disagree about as often as exact copies'. Inputs of several fields (a premise and a hypothesis) embed
# as one text that the longest field dominates: there only copies count.
NEAR_TWIN_COSINE = 0.95
NEAR_TWIN_COSINE_FIELDS = 0.999


def _text_key(query: Mapping[str, str]) -> str:
    """An input's text lower-cased with all but letters and digits dropped: punctuation alone pushes short
    copies ("Here she is" ~ "Here she is......") below the cosine threshold."""
    return "\x1f".join("".join(c for c in value.lower() if c.isalnum()) for value in query.values())


def without_near_twins(embeddings: np.ndarray, held: Sequence[int], pool: Sequence[int], keep: int,
                       cosine: float = NEAR_TWIN_COSINE,
                       inputs: Sequence[Mapping[str, str]] | None = None) -> tuple[list[int], int]:
    """The pool rows that are no held-back example's near-twin (cosine above ``cosine``, or, given ``inputs``,
    the same normalised text), and how many held-back examples had one. kNN would retrieve a held-back
    example's own copy as its demonstration and flatter the fit's estimate; at least ``keep`` rows stay (the
    largest count's demonstrations), the least similar first."""
    if not len(held) or not len(pool):
        return list(pool), 0
    similarity = np.asarray(embeddings[list(pool)] @ embeddings[list(held)].T)  # (pool, held)
    twins = similarity > cosine
    if inputs is not None:
        held_keys = [_text_key(inputs[h]) for h in held]
        for i, row in enumerate(pool):
            key = _text_key(inputs[row])
            if key.strip("\x1f"):  # empty (or emoji-only) texts all share a key: no evidence of a copy
                twins[i] |= np.array([key == other for other in held_keys])
    nearest = np.where(twins, 2.0, similarity).max(axis=1)
    kept = [row for row, twin in zip(pool, twins.any(axis=1), strict=True) if not twin]
    if len(kept) < keep:  # a pool of copies: keep the least similar of them
        chosen = sorted(np.argsort(nearest, kind="stable")[:keep])
        kept = [pool[i] for i in chosen]
        twins[chosen] = False  # kept after all: their held-back twins still draw them
    return kept, int(twins.any(axis=0).sum())


def cosine_for(fields: Sequence[str]) -> float:
    """The near-twin cosine for inputs of these template fields."""
    return NEAR_TWIN_COSINE if len(fields) == 1 else NEAR_TWIN_COSINE_FIELDS


# Above this many examples a pool's groups are found by their normalised text alone: comparing every pair's
# embeddings grows with the square of the pool (20,000 examples: a few seconds on two cores).
MAX_COSINE_ROWS = 20_000
_BLOCK = 2048


@dataclass(frozen=True)
class TwinGroups:
    """Groups of near-twins in a pool: each a set of two or more examples linked by copies or near-copies."""

    groups: int
    examples: int  # the examples in some group
    by_cosine: bool  # whether embeddings were compared too (else normalised text only)

    @classmethod
    def of(cls, components: np.ndarray, by_cosine: bool) -> TwinGroups:
        """From ``twin_components``' output."""
        sizes = np.bincount(components) if len(components) else np.zeros(0, dtype=np.int64)
        return cls(int((sizes > 1).sum()), int(sizes[sizes > 1].sum()), by_cosine)

    def describe(self) -> dict[str, object]:
        return {"groups": self.groups, "examples": self.examples, "by_cosine": self.by_cosine}


def twin_components(embeddings: np.ndarray, inputs: Sequence[Mapping[str, str]], cosine: float,
                    max_cosine_rows: int = MAX_COSINE_ROWS) -> tuple[np.ndarray, bool]:
    """Per example, the id of its group of near-twins (``without_near_twins``' rule: cosine above ``cosine``,
    or the same normalised, non-empty text; an example without twins is a group of one), and whether
    embeddings were compared (not above ``max_cosine_rows`` examples) or only texts. Cross-fitting keeps a
    group in one fold, so that no example is judged by a model that saw its copy."""
    n = len(inputs)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    first: dict[str, int] = {}
    for i, query in enumerate(inputs):
        key = _text_key(query)
        if key.strip("\x1f"):
            j = first.setdefault(key, i)
            if j != i:
                rows.append(np.array([j]))
                cols.append(np.array([i]))
    by_cosine = 0 < n <= max_cosine_rows
    if by_cosine:
        vectors = np.asarray(embeddings, dtype=np.float32)
        for start in range(0, n, _BLOCK):
            similarity = vectors[start:start + _BLOCK] @ vectors.T
            r, c = np.nonzero(similarity > cosine)
            keep = c > r + start  # each pair once, no example with itself
            rows.append(r[keep] + start)
            cols.append(c[keep])
    if not n:
        return np.zeros(0, dtype=np.int64), by_cosine
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64), by_cosine


def twin_groups(embeddings: np.ndarray, inputs: Sequence[Mapping[str, str]], cosine: float,
                max_cosine_rows: int = MAX_COSINE_ROWS) -> TwinGroups:
    """How many groups of two or more near-twins these examples hold, and how many examples are in them."""
    return TwinGroups.of(*twin_components(embeddings, inputs, cosine, max_cosine_rows))
