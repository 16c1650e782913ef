"""A task's fit (its cascade, meta-controller and calibration) as a background job: started on request, or by
itself once a task has enough labeled examples; described and deleted. What the fit does is the library's
(``controller.fitting.fit_task``); this module loads the task, runs it as a job and stores the result."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from anyio import to_thread

from controller.cascade import HIDDEN_STAGE
from controller.counts import TaskDefaults
from controller.fitting import FitReport, FitRequest, TaskToFit, affordable_counts, fit_task, needed_labeled
from controller.hidden_fit import HiddenStateReader
from controller.training import MIN_TRAIN_SIZE
from service.errors import APIError
from service.jobs import ProgressCallback
from service.protocol import ControllerObject, ControllerTrainRequest, JobCreated, StoredTrainRequest
from service.records import fit_id_of, of_another_embedder, task_examples, task_template
from service.serving_tasks import TaskServing, controller_object
from service.state import AppState
from service.store import FIT_JOB, JobRunningError, TaskRecord

logger = logging.getLogger(__name__)


def fit_summary(report: FitReport, request: ControllerTrainRequest, pool_version: int, stamp: datetime,
                embedder: str | None = None) -> dict[str, Any]:
    """What is stored beside a fit and served as its description: the library's report, what the fit was asked
    (an automatic refit asks the same), when it was made, its id, the pool version it was made on, and the
    embedder that made the pool's embeddings (its heads read them)."""
    summary = report.as_dict()
    metadata = summary.pop("metadata")
    # In the order fits have always been stored in (a job's result shows it as stored).
    ordered = {key: summary.pop(key) for key in ("candidate_k", "train_size", "selection")}
    choice = summary.pop("choice")
    return {**ordered, "request": request.model_dump(), **summary, "choice": choice, "created_at": stamp.isoformat(),
            "fit_id": fit_id_of(stamp),
            "metadata": {**{key: metadata.pop(key) for key in ("model", "labels", "scikit_learn")},
                         "pool_version": pool_version, **metadata,
                         **({"embedder": embedder} if embedder is not None else {})}}


def serves_hidden(summary: dict[str, Any]) -> bool:
    """Whether the fit's choice is a hidden-state head, which an engine without hidden states cannot serve."""
    return ((summary.get("cascade") or {}).get("stages") or []) == [HIDDEN_STAGE]


class FitServing:
    def __init__(self, state: AppState, tasks: TaskServing) -> None:
        self.state = state
        self.tasks = tasks
        self._submitting = asyncio.Lock()  # a fit checked and submitted at a time: never two at once for a task
        # A task (its id and creation time: SQLite gives a task created again a deleted task's id) -> labeled
        # examples when this process last fitted it by itself.
        self._attempted: dict[tuple[int, datetime], int] = {}

    def _check(self, task: TaskRecord, candidate_k: list[int]) -> None:
        if candidate_k[-1] > self.state.settings.max_demos:
            raise APIError(400, f"candidate_k may not exceed {self.state.settings.max_demos}", "invalid_value",
                           "candidate_k")
        needed = needed_labeled(candidate_k)
        if task.n_labeled < needed:
            raise APIError(400, f"training needs at least {needed} labeled examples ({MIN_TRAIN_SIZE} to hold back "
                           f"and {candidate_k[-1]} to serve as demonstrations); task '{task.name}' has "
                           f"{task.n_labeled}", "not_enough_labeled_examples", "train_size")

    async def train(self, name: str, request: ControllerTrainRequest) -> JobCreated:
        """Start the fit job; 409 while another fit of the task runs (its job id in the message)."""
        async with self._submitting:
            task = await to_thread.run_sync(self.tasks.get_record, name)
            candidate_k = sorted(set(request.candidate_k))
            self._check(task, candidate_k)
            running = await to_thread.run_sync(self.state.store.unfinished_job, FIT_JOB, name)
            if running is None:
                try:
                    return await self._submit(task, request, candidate_k)
                except JobRunningError:  # another replica submitted one between the check and the insert
                    running = await to_thread.run_sync(self.state.store.unfinished_job, FIT_JOB, name)
            job = f" (job {running.id}); follow it with GET /v1/jobs/{running.id}" if running else ""
            raise APIError(409, f"task '{name}' is being fitted already{job}, or ask again when it has finished",
                           "fit_running", "name")

    async def fit_if_due(self, name: str) -> None:
        """Start the fit by itself when it is due (``_due``); nothing when one runs, the engine is not ready, or
        it is off. It never fails the request that called it (that request's change is stored): a problem is
        logged."""
        settings = self.state.settings
        if not settings.auto_fit or self.state.runtime is None:
            return
        try:
            async with self._submitting:
                task = await to_thread.run_sync(self.state.store.get_task, name)
                if task is None:  # deleted meanwhile (after a fit of it finished)
                    return
                if await to_thread.run_sync(self.state.store.unfinished_job, FIT_JOB, name) is not None:
                    return
                stored = await to_thread.run_sync(self.state.store.fit_summary_and_stamp, task.id)
                request = self._due(task, stored[0] if stored is not None else None)
                if request is None:
                    return
                candidate_k = affordable_counts(request.candidate_k, task.n_labeled, settings.max_demos)
                if len(candidate_k) < 2:
                    return
                self._attempted[(task.id, task.created_at)] = task.n_labeled
                try:
                    job = await self._submit(task, request, candidate_k)
                except JobRunningError:  # another replica started it first
                    return
            logger.info("task '%s': fitting by itself (%d labeled examples), job %s", name, task.n_labeled,
                        job.job_id)
        except Exception:
            logger.exception("task '%s': its automatic fit could not be started", name)

    async def fit_all_due(self) -> None:
        """Once the engine is ready: fit every task whose fit is due (one stored before automatic fits, or
        grown while the service was down), as an upload would have."""
        if not self.state.settings.auto_fit:
            return
        for task in await to_thread.run_sync(self.state.store.list_tasks):
            await self.fit_if_due(task.name)

    def _due(self, task: TaskRecord, summary: dict[str, Any] | None) -> ControllerTrainRequest | None:
        """The request of a fit that is due, or None: due once the task has ``auto_fit_min_labeled`` labeled
        examples and no fit, a fit without a calibration (made before fits had one) or one of another model,
        or once the labeled examples have grown by ``auto_refit_growth`` since the fit. A refit asks what the
        present fit was asked (its selection, counts, size, seed). An attempt that failed is not retried until
        the examples have grown as much again."""
        settings = self.state.settings
        growth = 1 + settings.auto_refit_growth
        if task.n_labeled < max(settings.auto_fit_min_labeled, MIN_TRAIN_SIZE + 1):
            return None
        attempted = self._attempted.get((task.id, task.created_at))
        if attempted is not None and task.n_labeled < attempted * growth:
            return None
        if summary is None:
            return ControllerTrainRequest()
        metadata = summary.get("metadata", {})
        asked = summary.get("request")
        request = (StoredTrainRequest.model_validate(asked) if asked is not None else
                   ControllerTrainRequest(selection=summary.get("selection", "knn"), seed=summary.get("seed", 0)))
        runtime = self.state.runtime
        # Made before fits had a calibration or counted their examples, or with another model, embedder, or an
        # engine that read hidden states where this one reads none.
        stale = summary.get("calibration") is None or metadata.get("n_labeled") is None or (runtime is not None and (
            metadata.get("model") != runtime.scorer.model_name
            or of_another_embedder(summary, runtime.embedder.identity)
            or (serves_hidden(summary) and not isinstance(runtime.scorer, HiddenStateReader))))
        if stale or task.n_labeled >= int(metadata["n_labeled"]) * growth:
            return request
        return None

    async def _submit(self, task: TaskRecord, request: ControllerTrainRequest, candidate_k: list[int]) -> JobCreated:
        runtime = self.state.require_runtime()
        defaults = TaskDefaults.resolve(task.default_k, self.state.settings.default_k)
        asked = FitRequest(candidate_k=tuple(candidate_k), train_size=request.train_size,
                           selection=request.selection, seed=request.seed, default_k=defaults.default_k)

        async def body(progress: ProgressCallback) -> dict[str, Any]:
            began = time.perf_counter()
            rows = await to_thread.run_sync(self.state.store.load_pool, task.id)
            to_fit = TaskToFit(labels=task.labels, verbalizers=task.verbalizers, template=task_template(task),
                               examples=task_examples(rows))
            fit, report = await fit_task(to_fit, asked, runtime.scorer, progress)
            # The job's whole time, loading the task included, as fits have always reported it.
            report = replace(report, cost=replace(report.cost, seconds=round(time.perf_counter() - began, 1)))
            stamp = datetime.now(UTC)
            summary = fit_summary(report, request, rows.pool_version, stamp, runtime.embedder.identity)
            saved = await to_thread.run_sync(self.state.store.save_fit, task.id, pickle.dumps(fit), summary,
                                             stamp, task.created_at)
            if not saved:  # the fit's result must not land on a task of the same id created since
                raise RuntimeError(f"task '{task.name}' was deleted while it was being fitted; nothing was saved")
            return summary

        # Examples uploaded while the fit ran found it running and started nothing: look again once it is done.
        job = await self.state.jobs.submit(FIT_JOB, task.name, body, then=lambda: self.fit_if_due(task.name))
        return JobCreated(job_id=job.id)

    def get(self, name: str) -> ControllerObject:
        task = self.tasks.get_record(name)
        stored = self.state.store.fit_summary_and_stamp(task.id)
        if stored is None:
            raise APIError(404, f"task '{name}' has no fitted controller; train one with POST "
                           f"/v1/tasks/{name}/controller", "controller_not_found", "name")
        return controller_object(*stored)

    def delete(self, name: str) -> None:
        task = self.tasks.get_record(name)
        if not self.state.store.delete_fit(task.id):
            raise APIError(404, f"task '{name}' has no fitted controller", "controller_not_found", "name")
