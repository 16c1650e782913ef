"""Approximate nearest neighbours for large pools: an HNSW graph (usearch) over the pool's embeddings, by inner
product, so that a query reads a few hundred pool rows instead of every one.

The index is keyed by the rows' stable keys (``LabeledPool.keys``), not their places, so one index serves a
pool through its versions: appended rows are added and rows that leave the pool removed, in place. Each
search maps the keys it finds to the asking pool's rows, which drops keys that pool does not hold (added
after it). Candidates are then scored exactly, so the only approximation is which rows are candidates.

Building the graph of 100,000 rows takes a while on a few cores: the first search of a large enough pool
starts it in a thread, from the newest pool the index was told of, and returns None (the caller searches
exactly) until it is done; changes that arrive meanwhile are applied after the build."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class NeighbourIndex:
    """One pool's approximate index (see the module). ``min_pool``: pools smaller than this are searched
    exactly; ``candidates``: rows each search returns, at least the most demonstrations a prompt may have.
    The graph keeps half-precision vectors: on all-MiniLM-L6-v2 embeddings it recalls as many true neighbours
    as single precision, searches about twice as fast and builds faster (bench/README.md); candidates are
    scored in single precision all the same."""

    def __init__(self, min_pool: int, candidates: int = 64, *, background: bool = True, connectivity: int = 16,
                 expansion_add: int = 128, expansion_search: int = 128, dtype: str = "f16") -> None:
        self.min_pool = min_pool
        self.candidates = candidates
        self._background = background
        self._settings = {"connectivity": connectivity, "expansion_add": expansion_add,
                          "expansion_search": max(expansion_search, candidates), "dtype": dtype}
        self._index: Any = None  # usearch.index.Index once built
        self._state = "empty"  # "empty" -> "building" -> "ready" (or "failed": exact search from then on)
        self._pending: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self._latest: tuple[np.ndarray, np.ndarray] | None = None  # the newest pool's keys and embeddings
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._state == "ready"

    def build(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Build the graph of these rows now (the first search does it by itself, in the background)."""
        with self._lock:
            if self._state != "empty":
                return
            self._state = "building"
        self._build(np.asarray(keys, dtype=np.uint64), np.ascontiguousarray(embeddings, dtype=np.float32))

    def _build(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        try:
            from usearch.index import Index

            index = Index(ndim=embeddings.shape[1], metric="ip", **self._settings)
            if len(keys):
                index.add(keys, embeddings, threads=0)  # every core: nothing waits for it
            with self._lock:
                for added, vectors, removed in self._pending:
                    _apply(index, added, vectors, removed)
                self._pending.clear()
                self._index, self._state = index, "ready"
            logger.info("approximate index of %d rows built", len(index))
        except Exception:
            logger.exception("the approximate index could not be built: searching exactly")
            with self._lock:
                self._state = "failed"

    def update(self, keys: np.ndarray, embeddings: np.ndarray, added: np.ndarray | None = None,
               vectors: np.ndarray | None = None, removed: np.ndarray | None = None) -> None:
        """The pool is now ``keys`` and ``embeddings``: rows ``added`` (keys, and their ``vectors``) joined it
        and rows ``removed`` (keys) left it. A pool new to the index passes neither."""
        added = np.asarray(added if added is not None else [], dtype=np.uint64)
        removed_keys = np.asarray(removed, dtype=np.uint64) if removed is not None and len(removed) else None
        vectors = np.asarray(vectors, dtype=np.float32) if len(added) else None
        with self._lock:
            self._latest = (keys, embeddings)
            if self._state == "ready":
                _apply(self._index, added, vectors, removed_keys)
            elif self._state == "building":
                self._pending.append((added, vectors, removed_keys))
            # "empty": the build reads the newest pool; "failed": nothing reads the index

    def similarities(self, queries: np.ndarray, keys: np.ndarray, embeddings: np.ndarray) -> np.ndarray | None:
        """(n_queries, n_pool): each query's exact similarity to its candidate rows, -inf to every other row;
        None when the caller should search exactly (a small pool, the index not built yet, or a search that
        found too few of this pool's rows)."""
        n_pool = len(keys)
        if n_pool < max(self.min_pool, self.candidates + 1):
            return None
        if self._state == "empty":
            start = False
            with self._lock:
                if self._state == "empty":
                    self._state, start = "building", True
                    newest = self._latest or (keys, embeddings)  # an older pool may ask first
            if start:
                # Views' rows are never written again: the build reads them without a copy.
                snapshot = (np.asarray(newest[0], dtype=np.uint64), np.ascontiguousarray(newest[1], dtype=np.float32))
                if self._background:
                    threading.Thread(target=self._build, args=snapshot, name="ann-build", daemon=True).start()
                else:
                    self._build(*snapshot)
        if self._state != "ready":
            return None
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self._lock:  # searches are short; updates must not run beside them
            # One thread: planning runs in the service's worker threads, one per request already.
            matches = self._index.search(queries, self.candidates, threads=1)
        # One query gets a Matches (no counts; its keys as many as found), several a BatchMatches.
        counts = np.asarray(matches.counts if hasattr(matches, "counts") else [len(matches.keys)]).reshape(-1)
        if np.any(counts < self.candidates):
            return None
        found = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)
        rows = np.searchsorted(keys, found)
        valid = (rows < n_pool) & (np.asarray(keys)[np.minimum(rows, n_pool - 1)] == found)
        if not valid.all():
            return None  # keys this pool does not hold (changed since): exact search answers it
        similarities = np.full((len(queries), n_pool), -np.inf, dtype=np.float32)
        candidate = np.einsum("qd,qcd->qc", queries, embeddings[rows])
        np.put_along_axis(similarities, rows, candidate.astype(np.float32), axis=1)
        return similarities

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else 0


def _apply(index: Any, added: np.ndarray, vectors: np.ndarray | None, removed: np.ndarray | None) -> None:
    if removed is not None and len(removed):
        index.remove(removed)
    if len(added) and vectors is not None:
        new = np.array([int(key) not in index for key in added], dtype=bool)  # a key added twice is refused
        if new.any():
            index.add(added[new], vectors[new])
