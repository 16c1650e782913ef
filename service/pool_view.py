"""A task's pool as predictions use it, loaded whole once and then brought up to date in place: a new pool
version reads only the rows added or relabeled since the cached one (``Store.load_pool_changes``) and builds
the next view from the last, keeping what did not change (embeddings, demonstrations' token counts, domain
words, the approximate index). Views are never modified once built: requests planning on an older one keep
a consistent pool."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from controller.ann import NeighbourIndex
from controller.bias import BiasCache
from controller.domain import DomainWords
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.scoring import LabelScorer
from controller.templates import PromptTemplate
from service.records import prompt_builder
from service.store import PoolChanges, PoolRows, TaskRecord

logger = logging.getLogger(__name__)


class RowBuffer:
    """A float32 matrix that grows by writing appended rows into spare room at its end. Each view hands out its
    first n rows; rows once handed out are never written again, so an older view stays valid beside newer
    ones. Only the view as long as the buffer may append in place; any other copies."""

    def __init__(self, n_rows: int, dim: int) -> None:
        self._data = np.empty((n_rows + max(64, n_rows // 16), dim), dtype=np.float32)
        self.n = n_rows
        self._lock = threading.Lock()

    @classmethod
    def of(cls, rows: np.ndarray) -> RowBuffer:
        buffer = cls(len(rows), rows.shape[1])
        buffer._data[:len(rows)] = rows
        return buffer

    @property
    def data(self) -> np.ndarray:
        """Every row, spare room included (filled by whoever builds the buffer)."""
        return self._data

    def rows(self) -> np.ndarray:
        return self._data[:self.n]

    def append(self, n_view: int, rows: np.ndarray) -> tuple[RowBuffer, np.ndarray]:
        """The buffer holding the first ``n_view`` rows and then ``rows``, and a view of them."""
        with self._lock:
            if n_view == self.n and self.n + len(rows) <= len(self._data):
                self._data[self.n:self.n + len(rows)] = rows
                self.n += len(rows)
                return self, self._data[:self.n]
        grown = RowBuffer(n_view + len(rows), self._data.shape[1])
        grown._data[:n_view] = self._data[:n_view]
        grown._data[n_view:grown.n] = rows
        return grown, grown.rows()


@dataclass
class PoolView:
    """One pool version of a task, as predictions use it."""

    version: int
    builder: PromptBuilder  # over the labeled pool; it caches each demonstration's token count
    domain_words: DomainWords  # from every input of the task, labeled or not
    inputs: list[dict[str, str]]
    # Label-bias estimates by demonstration set: valid while this pool version is (rows are their keys).
    biases: BiasCache = field(default_factory=BiasCache)
    # The latest queries, when ICL_DOMAIN_RECENT_QUERIES asks for them in domain-context strings.
    recent: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=0))
    _recent_lock: threading.Lock = field(default_factory=threading.Lock)
    # What an update in place needs: every row's storage key (ascending, the rows' order) and label, and the
    # buffer the labeled pool's embeddings are the first rows of. The labeled pool's ``keys`` are its rows'.
    row_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    row_labels: list[str | None] = field(default_factory=list)
    embedding_buffer: RowBuffer | None = None

    @property
    def labeled(self) -> LabeledPool:
        return self.builder.pool

    def remember(self, queries: Sequence[dict[str, str]]) -> None:
        if self.recent.maxlen:
            with self._recent_lock:
                self.recent.extend(queries)

    def words(self) -> DomainWords:
        """Random in-domain words from the task's inputs and its recent queries."""
        with self._recent_lock:
            recent = list(self.recent)
        if not recent:
            return self.domain_words
        return DomainWords.from_inputs([*self.inputs, *recent], list(self.domain_words.words))

    def recent_copy(self) -> deque[dict[str, str]]:
        with self._recent_lock:
            return deque(self.recent, maxlen=self.recent.maxlen)


def load_view(rows: PoolRows, task: TaskRecord, template: PromptTemplate, scorer: LabelScorer, recent: int,
              index: NeighbourIndex | None = None) -> PoolView:
    """The view of a whole pool as the store read it. ``index``: an approximate index for the pool's
    similarities (empty: it fills itself when first asked, see ``controller.ann``)."""
    labeled = [i for i, label in enumerate(rows.labels) if label is not None]
    dim = rows.embeddings.shape[1] if rows.embeddings.ndim == 2 else 0  # a task without examples has none
    buffer = RowBuffer(len(labeled), dim)
    if labeled:
        np.take(rows.embeddings, labeled, axis=0, out=buffer.data[:len(labeled)])
    keys = np.asarray(rows.row_ids, dtype=np.int64)
    pool = LabeledPool(ids=[rows.ids[i] for i in labeled], inputs=[rows.inputs[i] for i in labeled],
                       labels=[rows.labels[i] for i in labeled],  # type: ignore[misc]
                       embeddings=buffer.rows(), keys=keys[labeled] if len(keys) else None, index=index)
    if index is not None and pool.keys is not None:
        index.update(pool.keys, pool.embeddings)
    return PoolView(version=rows.pool_version, builder=prompt_builder(task, template, pool, scorer),
                    domain_words=DomainWords.from_inputs(rows.inputs, template.fields), inputs=list(rows.inputs),
                    recent=deque(maxlen=recent), row_ids=keys, row_labels=list(rows.labels), embedding_buffer=buffer)


def updated_view(view: PoolView, changes: PoolChanges) -> PoolView | None:
    """The view ``changes`` make of ``view``: appended rows and label changes (a row joining the labeled pool,
    leaving it, or relabeled), with a fresh bias cache (pool rows and domain words are its estimates' keys and
    sources). None when the changes are not what an update in place can follow (a row it does not know,
    counts that differ from the store's, another embedding size): the caller then reloads the whole pool."""
    rows, pool, buffer = changes.rows, view.labeled, view.embedding_buffer
    if buffer is None or pool.keys is None or not len(view.row_ids):
        return None
    keys = np.asarray(rows.row_ids, dtype=np.int64)
    if rows.row_ids and rows.embeddings.shape[1] != pool.embeddings.shape[1]:
        return None
    new = keys > view.row_ids[-1]
    known = np.flatnonzero(~new)
    positions = np.searchsorted(view.row_ids, keys[known])
    if np.any(positions >= len(view.row_ids)) or np.any(view.row_ids[np.minimum(positions, len(view.row_ids) - 1)]
                                                         != keys[known]):
        return None  # a row added out of key order (or some change this update does not know)
    row_labels, joined, left, relabeled = _label_changes(view, rows, keys, known.tolist(), positions.tolist())
    appended = np.flatnonzero(new).tolist()
    row_labels.extend(rows.labels[j] for j in appended)
    joined.extend(j for j in appended if rows.labels[j] is not None)  # keys ascending: inserted, then appended
    row_ids = np.concatenate([view.row_ids, keys[new]])
    if len(row_ids) != changes.n_examples:
        return None  # rows added that the versions did not record (a writer older than them)

    only_appended = not left and (not joined or not len(pool.keys) or keys[joined[0]] > pool.keys[-1])
    if only_appended:
        labeled, new_rows, buffer = _appended(pool, rows, joined, relabeled, buffer)
    else:
        labeled, new_rows, buffer = _merged(pool, rows, joined, left, relabeled)
    if pool.index is not None and labeled.keys is not None:
        pool.index.update(labeled.keys, labeled.embeddings, added=keys[joined],
                          vectors=rows.embeddings[joined] if joined else None,
                          removed=pool.keys[left] if left else None)
    appended_inputs = [rows.inputs[j] for j in appended]
    return PoolView(
        version=rows.pool_version,
        builder=view.builder.rebased(labeled, new_rows),
        domain_words=view.domain_words.extended(appended_inputs, len(view.inputs)) if appended else view.domain_words,
        inputs=[*view.inputs, *appended_inputs] if appended else view.inputs,
        recent=view.recent_copy(), row_ids=row_ids, row_labels=row_labels, embedding_buffer=buffer)


def _label_changes(view: PoolView, rows: PoolRows, keys: np.ndarray, known: Sequence[int],
                   positions: Sequence[int]) -> tuple[list[str | None], list[int], list[int], dict[int, str]]:
    """How the changed rows the view knows (``known``, at ``positions`` among its rows) move the labeled pool:
    every row's label after them, the changed rows that join the pool, the pool rows that leave it, and the
    pool rows relabeled (to their new label)."""
    pool = view.labeled
    assert pool.keys is not None
    row_labels = list(view.row_labels)
    joined: list[int] = []
    left: list[int] = []
    relabeled: dict[int, str] = {}
    for j, position in zip(known, positions, strict=True):
        before, after = row_labels[position], rows.labels[j]
        row_labels[position] = after
        if before == after:
            continue
        if before is None:
            joined.append(j)
        else:
            row = int(np.searchsorted(pool.keys, keys[j]))
            if after is None:
                left.append(row)
            else:
                relabeled[row] = after
    return row_labels, joined, left, relabeled


def _appended(pool: LabeledPool, rows: PoolRows, joined: Sequence[int], relabeled: dict[int, str],
              buffer: RowBuffer) -> tuple[LabeledPool, np.ndarray, RowBuffer]:
    """Rows only appended to the labeled pool (and some relabeled): every row keeps its place, the embeddings
    their buffer."""
    buffer, embeddings = buffer.append(len(pool), rows.embeddings[list(joined)] if joined
                                       else np.zeros((0, pool.embeddings.shape[1]), dtype=np.float32))
    labels = list(pool.labels)
    for row, label in relabeled.items():
        labels[row] = label
    keys = np.asarray(rows.row_ids, dtype=np.int64)[list(joined)]
    labeled = LabeledPool(ids=[*pool.ids, *(rows.ids[j] for j in joined)],
                          inputs=[*pool.inputs, *(rows.inputs[j] for j in joined)],
                          labels=[*labels, *(rows.labels[j] for j in joined)],  # type: ignore[misc]
                          embeddings=embeddings, keys=np.concatenate([pool.keys, keys]), index=pool.index)
    new_rows = np.arange(len(pool), dtype=np.int64)
    new_rows[list(relabeled)] = -1  # a relabeled demonstration renders anew
    return labeled, new_rows, buffer


def _merged(pool: LabeledPool, rows: PoolRows, joined: Sequence[int], left: Sequence[int],
            relabeled: dict[int, str]) -> tuple[LabeledPool, np.ndarray, RowBuffer]:
    """Rows joining the labeled pool amid it or leaving it: the pool spliced anew in key order, runs of kept
    rows copied whole (one pass over its embeddings, no per-row work), each kept row's place remapped."""
    assert pool.keys is not None
    keys = np.asarray(rows.row_ids, dtype=np.int64)
    # Where each change happens, in the old pool's rows: a joining row goes before the first larger key; at one
    # place, the insertion comes first (it goes before the row that leaves).
    events = sorted([(int(np.searchsorted(pool.keys, keys[j])), 0, j) for j in joined]
                    + [(row, 1, row) for row in left])
    n_new = len(pool) + len(joined) - len(left)
    buffer = RowBuffer(n_new, pool.embeddings.shape[1])
    target = buffer.data
    ids: list[str] = []
    inputs: list = []
    labels: list[str] = []
    new_keys = np.empty(n_new, dtype=np.int64)
    new_rows = np.full(len(pool), -1, dtype=np.int64)
    relabel_rows = sorted(relabeled)

    def run(start: int, end: int) -> None:  # old rows [start, end) kept, in order
        if end <= start:
            return
        at = len(ids)
        target[at:at + end - start] = pool.embeddings[start:end]
        new_keys[at:at + end - start] = pool.keys[start:end]
        new_rows[start:end] = np.arange(at, at + end - start)
        ids.extend(pool.ids[start:end])
        inputs.extend(pool.inputs[start:end])
        labels.extend(pool.labels[start:end])

    cursor = 0
    for position, kind, item in events:
        run(cursor, position)
        cursor = max(cursor, position)
        if kind == 0:  # row ``item`` of the changes joins here
            at = len(ids)
            target[at] = rows.embeddings[item]
            new_keys[at] = keys[item]
            ids.append(rows.ids[item])
            inputs.append(rows.inputs[item])
            labels.append(rows.labels[item])  # type: ignore[arg-type]
        else:  # old row ``item`` leaves
            cursor = item + 1
    run(cursor, len(pool))
    for row in relabel_rows:
        labels[int(new_rows[row])] = relabeled[row]
        new_rows[row] = -1  # a relabeled demonstration renders anew
    labeled = LabeledPool(ids=ids, inputs=inputs, labels=labels, embeddings=buffer.rows(), keys=new_keys,
                          index=pool.index)
    return labeled, new_rows, buffer
