"""What serving a task's predictions needs, cached in memory: its template, its labeled pool with a prompt
builder over it, the words domain calibration draws from, its bias estimates and its fitted controller.

One cheap read per request (``Store.task_versions``) says whether the cached view is still current: the pool
part is brought up to date when the pool version moves on, from the rows changed since (``service.pool_view``;
with a fresh bias cache: pool rows are its keys), or reloaded whole when much changed; the controller is
reloaded when a new one is fitted. Replicas share only the database; the version check makes a replica notice
what another one changed."""

from __future__ import annotations

import logging
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from controller.ann import NeighbourIndex
from controller.counts import AutoPolicy, TaskDefaults
from controller.hidden_fit import HiddenHead, HiddenStateReader
from controller.meta import MetaController
from controller.predictor import PredictOptions, Predictor
from controller.scoring import LabelScorer
from controller.templates import PromptTemplate
from controller.training import TaskFit
from service.errors import task_not_found
from service.pool_view import PoolView, load_view, updated_view
from service.records import fit_id_of, of_another_embedder, task_template
from service.store import Store, TaskRecord, TaskVersions

__all__ = ["ContextCache", "PoolView", "TaskContext"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskContext:
    """A task as predict serves it: current for ``versions``."""

    task: TaskRecord
    template: PromptTemplate
    pool: PoolView
    fit: TaskFit | None  # the cascade, the meta-controller and the task's calibration, when fitted
    defaults: TaskDefaults  # what serves "auto": the task's default count, and the fit's policy
    versions: TaskVersions
    scorer: LabelScorer
    # "fitted", "none", or why a stored fit is not applied: "other_model", "unreadable".
    fit_state: str = "none"

    @property
    def fit_id(self) -> str | None:
        """The served fit's id; None when no fit is served (none, or one not applied)."""
        return fit_id_of(self.versions.fit_stamp) if self.fit is not None else None

    @property
    def controller(self) -> MetaController | None:
        return self.fit.controller if self.fit is not None else None

    def predictor(self, options: PredictOptions) -> Predictor:
        calibration = self.fit.calibration if self.fit is not None else None
        cascade = getattr(self.fit, "cascade", None)  # fits pickled before cascades lack it
        return Predictor.from_options(self.pool.builder, self.task.labels, options, self.defaults, self.controller,
                                      lambda: self.pool.domain_words, self.pool.biases, calibration, cascade,
                                      recent_words=self.pool.words, head=getattr(self.fit, "head", None),
                                      hidden=self.hidden_head)

    @property
    def hidden_head(self) -> HiddenHead | None:
        """The fit's hidden-state head, where the engine serving reads hidden states (a fit made where it did,
        served where it does not: its choice gives way to the unfitted default, and decision "hidden" is 409)."""
        return getattr(self.fit, "hidden", None) if isinstance(self.scorer, HiddenStateReader) else None


class ContextCache:
    """Task contexts by name, the least recently used dropped past ``max_tasks``. One build per task at a time:
    requests that find a context out of date while another request rebuilds it wait for that one."""

    def __init__(self, store: Store, default_k: int, max_tasks: int = 64, recent_queries: int = 0,
                 ann_min_pool: int | None = None, ann_candidates: int = 64,
                 auto_policy: AutoPolicy = "cascade") -> None:
        """``default_k`` and ``auto_policy``: the service's, for tasks created without a default count."""
        self._store = store
        self._default_k = default_k
        self._auto_policy = auto_policy
        self._max_tasks = max_tasks
        self._recent_queries = recent_queries
        # Pools of at least this many labeled rows are searched through an approximate index (None: never).
        self._ann_min_pool = ann_min_pool
        self._ann_candidates = ann_candidates
        self._lock = threading.Lock()
        # The embedder serving (its identity), set once the engine has started: a fit whose heads read another
        # embedder's embeddings is not served.
        self.embedder: str | None = None
        self._entries: OrderedDict[str, TaskContext] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}

    def _current(self, name: str, versions: TaskVersions, scorer: LabelScorer) -> TaskContext | None:
        with self._lock:
            cached = self._entries.get(name)
            if cached is not None and cached.scorer is scorer and cached.versions == versions:
                self._entries.move_to_end(name)
                return cached
            return None

    def get(self, name: str, scorer: LabelScorer) -> TaskContext:
        """The task's current context (404 when there is no such task). Blocking: call from a worker thread."""
        versions = self._store.task_versions(name)
        if versions is None:
            raise task_not_found(name)
        if (hit := self._current(name, versions, scorer)) is not None:
            return hit
        with self._lock:
            building = self._building.setdefault(name, threading.Lock())
        with building:
            if (hit := self._current(name, versions, scorer)) is not None:  # built while this request waited
                return hit
            with self._lock:
                cached = self._entries.get(name)
            same_task = (cached is not None and cached.scorer is scorer
                         and (cached.versions.task_id, cached.versions.created_at) == (versions.task_id,
                                                                                       versions.created_at))
            context = self._build(name, versions, scorer, cached if same_task else None)
            with self._lock:
                self._entries[name] = context
                self._entries.move_to_end(name)
                while len(self._entries) > self._max_tasks:
                    evicted, _ = self._entries.popitem(last=False)
                    self._building.pop(evicted, None)
        return context

    def _build(self, name: str, versions: TaskVersions, scorer: LabelScorer, reuse: TaskContext | None) -> TaskContext:
        """A context for ``versions``, keeping what ``reuse`` (the same task's older context) still has right."""
        task = reuse.task if reuse is not None else self._store.get_task(name)
        if task is None:  # deleted since its versions were read
            raise task_not_found(name)
        template = reuse.template if reuse is not None else task_template(task)
        if reuse is not None and reuse.pool.version == versions.pool_version:
            pool = reuse.pool
        else:
            refreshed = self._refresh_pool(reuse.pool, task) if reuse is not None else None
            pool = refreshed if refreshed is not None else self._load_pool(task, template, scorer)
        if reuse is not None and reuse.versions.fit_stamp == versions.fit_stamp:
            fit, stamp, fit_state = reuse.fit, reuse.versions.fit_stamp, reuse.fit_state
        else:
            fit, stamp, fit_state = self._load_fit(task, scorer)
        return TaskContext(
            task=task, template=template, pool=pool, fit=fit,
            defaults=TaskDefaults.resolve(task.default_k, self._default_k, self._auto_policy),
            # What was loaded, which may be newer than ``versions``: the next request's check tells.
            versions=TaskVersions(task.id, task.created_at, pool.version, stamp), scorer=scorer, fit_state=fit_state)

    def _load_pool(self, task: TaskRecord, template: PromptTemplate, scorer: LabelScorer) -> PoolView:
        index = (NeighbourIndex(self._ann_min_pool, self._ann_candidates) if self._ann_min_pool is not None
                 else None)
        return load_view(self._store.load_pool(task.id), task, template, scorer, self._recent_queries, index)

    def _refresh_pool(self, cached: PoolView, task: TaskRecord) -> PoolView | None:
        """The cached pool brought up to date with the rows changed since its version; None when a whole
        reload is due (more than half the pool changed, or changes an update in place cannot follow)."""
        try:
            changes = self._store.load_pool_changes(task.id, cached.version, max(1, len(cached.row_ids) // 2))
            view = updated_view(cached, changes) if changes is not None else None
        except Exception:  # whatever went wrong, a whole reload gets it right
            logger.exception("task '%s': its pool could not be updated in place; reloading it", task.name)
            return None
        if view is None:
            logger.info("task '%s': reloading its pool", task.name)
        return view

    def _load_fit(self, task: TaskRecord, scorer: LabelScorer) -> tuple[TaskFit | None, datetime | None, str]:
        """The task's fit, its stamp and its state. One that cannot be read back (pickled by another
        scikit-learn, say) or was fitted with another model than the one serving is logged and left out, stamp
        kept, so that "auto" serves the unfitted defaults until a refit; its state says which."""
        stored = self._store.load_fit(task.id)
        if stored is None:
            return None, None, "none"
        try:
            fit = pickle.loads(stored.blob)  # written only by this service, never by a client
        except Exception:
            logger.exception("task '%s': its fit cannot be loaded; serving the unfitted defaults until it is fitted "
                             "again", task.name)
            return None, stored.stamp, "unreadable"
        if isinstance(fit, MetaController):  # stored before fits carried a calibration
            fit = TaskFit(controller=fit, calibration=None, model=str(stored.summary.get("metadata", {}).get("model")
                                                                      or ""))
        if fit.model and fit.model != scorer.model_name:  # "": stored before fits recorded their model
            logger.warning("task '%s' was fitted with %s, not %s: serving the unfitted defaults until it is fitted "
                           "again", task.name, fit.model, scorer.model_name)
            return None, stored.stamp, "other_model"
        if of_another_embedder(stored.summary, self.embedder):
            logger.warning("task '%s' was fitted on embeddings of %s, not %s: serving the unfitted defaults until "
                           "it is fitted again", task.name, stored.summary["metadata"]["embedder"], self.embedder)
            return None, stored.stamp, "other_model"
        return fit, stored.stamp, "fitted"

    def forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._building.pop(name, None)
