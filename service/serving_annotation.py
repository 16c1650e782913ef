"""Annotation plans: which unlabeled examples of a task's pool to label first.

Embedding-only methods answer at once unless the pool is large; two-stage vote-k runs the model over the
pool, so it always runs as a job (202), like large pools."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from anyio import to_thread

from controller.annotation import ideal, model_confidence, random_selection, votek, votek_second_stage
from service.errors import APIError
from service.jobs import ProgressCallback
from service.protocol import AnnotationPlan, AnnotationPlanRequest, JobCreated
from service.records import prompt_builder, task_examples, task_template
from service.serving_tasks import TaskServing
from service.state import AppState, Runtime
from service.store import PoolRows, TaskRecord


class AnnotationServing:
    def __init__(self, state: AppState, tasks: TaskServing) -> None:
        self.state = state
        self.tasks = tasks

    async def annotation_plan(self, name: str, request: AnnotationPlanRequest) -> AnnotationPlan | JobCreated:
        task, rows, unlabeled = await to_thread.run_sync(self._load, name, request)
        if request.method == "votek_two_stage":
            runtime = self.state.require_runtime()  # 503 now rather than a failed job later

            async def two_stage(progress: ProgressCallback) -> dict[str, Any]:
                plan = await self._two_stage(task, rows, unlabeled, request, runtime, progress)
                return plan.model_dump()

            return JobCreated(job_id=(await self.state.jobs.submit("annotation", name, two_stage)).id)
        if len(unlabeled) > self.state.settings.annotation_sync_max:

            async def large(progress: ProgressCallback) -> dict[str, Any]:
                return (await to_thread.run_sync(self._select, rows, unlabeled, request)).model_dump()

            return JobCreated(job_id=(await self.state.jobs.submit("annotation", name, large)).id)
        return await to_thread.run_sync(self._select, rows, unlabeled, request)

    def _load(self, name: str, request: AnnotationPlanRequest) -> tuple[TaskRecord, PoolRows, list[int]]:
        task = self.tasks.get_record(name)
        rows = self.state.store.load_pool(task.id)
        unlabeled = [i for i, label in enumerate(rows.labels) if label is None]
        if not unlabeled:
            raise APIError(400, f"task '{name}' has no unlabeled examples to choose from; add examples without a "
                           "label first", "no_unlabeled_examples", "name")
        if request.method == "votek_two_stage" and len(unlabeled) == len(rows.labels):
            raise APIError(400, "two-stage vote-k prompts the model with labeled examples, and task "
                           f"'{name}' has none: label the picks of method 'votek' with a budget of 10 first, then "
                           "ask again", "not_enough_labeled_examples", "method")
        return task, rows, unlabeled

    @staticmethod
    def _select(rows: PoolRows, unlabeled: list[int], request: AnnotationPlanRequest) -> AnnotationPlan:
        began = time.perf_counter()
        embeddings = rows.embeddings[unlabeled]
        if request.method == "votek":
            picks = votek(embeddings, request.budget)
        elif request.method == "ideal":
            picks = ideal(embeddings, request.budget, seed=request.seed)
        else:
            picks = random_selection(len(unlabeled), request.budget, request.seed)
        return AnnotationPlan(ids=[rows.ids[unlabeled[i]] for i in picks], method=request.method,
                              elapsed_s=time.perf_counter() - began)

    async def _two_stage(self, task: TaskRecord, rows: PoolRows, unlabeled: list[int], request: AnnotationPlanRequest,
                         runtime: Runtime, progress: ProgressCallback) -> AnnotationPlan:
        """The task's labeled examples are the first stage: the model, prompted with the nearest of them,
        classifies every unlabeled example; vote-k then picks across confidence buckets."""
        began = time.perf_counter()
        examples = task_examples(rows)
        labeled = examples.labeled
        builder = prompt_builder(task, task_template(task), examples.pool(labeled), runtime.scorer)
        confidence = np.full(len(rows.ids), np.inf)
        confidence[unlabeled] = await model_confidence(
            builder, [rows.inputs[i] for i in unlabeled], rows.embeddings[unlabeled], task.labels,
            min(request.confidence_demos, len(labeled)), request.seed, runtime.scorer,
            progress=lambda f: progress(0.95 * f))
        order = await to_thread.run_sync(lambda: votek_second_stage(
            rows.embeddings, labeled, confidence, len(labeled) + request.budget, seed=request.seed))
        picks = order[len(labeled):]
        return AnnotationPlan(ids=[rows.ids[i] for i in picks], method=request.method,
                              elapsed_s=time.perf_counter() - began)
