"""In-memory views of task pools, reloaded from the store whenever the task's pool version moves on.

Replicas share only the database; the version check makes a replica notice examples another one added."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from controller.calibration import BiasCache, DomainWords
from controller.pool import LabeledPool
from controller.templates import PromptTemplate
from service.store import PoolRows, Store, TaskRecord


@dataclass(frozen=True)
class TaskPool:
    labeled: LabeledPool
    domain_words: DomainWords
    inputs: list[dict[str, str]] = field(default_factory=list)  # every example's input, labeled or not
    # Label-bias estimates by demonstration set: valid while this pool version is (rows are their keys).
    biases: BiasCache = field(default_factory=BiasCache)
    # The latest queries, when ICL_DOMAIN_RECENT_QUERIES asks for them in domain-context strings.
    recent: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=0))
    _recent_lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, queries: list[dict[str, str]]) -> None:
        if self.recent.maxlen:
            with self._recent_lock:
                self.recent.extend(queries)

    def words_with_recent(self, fields: list[str]) -> DomainWords:
        """Random in-domain words from the task's inputs and its recent queries."""
        with self._recent_lock:
            recent = list(self.recent)
        if not recent:
            return self.domain_words
        return DomainWords.from_inputs([*self.inputs, *recent], fields)


def labeled_rows(rows: PoolRows) -> list[int]:
    return [i for i, label in enumerate(rows.labels) if label is not None]


def pool_of(rows: PoolRows, indices: Sequence[int]) -> LabeledPool:
    """The demonstration pool made of these (labeled) rows, in their order."""
    indices = list(indices)
    dim = rows.embeddings.shape[-1] if rows.embeddings.ndim == 2 else 0  # a task without examples has none
    embeddings = rows.embeddings[indices] if indices else np.zeros((0, dim), dtype=np.float32)
    return LabeledPool(ids=[rows.ids[i] for i in indices], inputs=[rows.inputs[i] for i in indices],
                       labels=[rows.labels[i] for i in indices],  # type: ignore[misc]
                       embeddings=embeddings)


class PoolCache:
    def __init__(self, store: Store, max_tasks: int = 64, recent_queries: int = 0) -> None:
        self._store = store
        self._recent_queries = recent_queries
        self._lock = threading.Lock()
        # Keyed by id and creation time: SQLite may give a re-created task the id of a deleted one.
        self._entries: dict[tuple[int, object], tuple[int, TaskPool]] = {}
        self._max_tasks = max_tasks

    def get(self, task: TaskRecord, template: PromptTemplate) -> TaskPool:
        version = self._store.pool_version(task.id)
        with self._lock:
            hit = self._entries.get((task.id, task.created_at))
            if hit is not None and hit[0] == version:
                return hit[1]
        rows = self._store.load_pool(task.id)
        pool = TaskPool(
            labeled=pool_of(rows, labeled_rows(rows)),
            # Random in-domain words come from every input of the task, labeled or not.
            domain_words=DomainWords.from_inputs(rows.inputs, template.fields),
            inputs=list(rows.inputs),
            recent=deque(maxlen=self._recent_queries),
        )
        with self._lock:
            if len(self._entries) >= self._max_tasks:
                self._entries.pop(next(iter(self._entries)))
            self._entries[(task.id, task.created_at)] = (rows.pool_version, pool)
        return pool

    def forget(self, task: TaskRecord) -> None:
        with self._lock:
            self._entries.pop((task.id, task.created_at), None)
