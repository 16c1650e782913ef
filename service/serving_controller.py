"""Meta-controller endpoints: train in a background job, describe, delete."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import numpy as np
from anyio import to_thread

from controller.meta import MetaController
from controller.training import MIN_TRAIN_SIZE, collect, validate
from service.errors import APIError
from service.jobs import ProgressCallback
from service.protocol import ControllerObject, ControllerTrainRequest, JobCreated
from service.records import labeled_rows, pool_of, prompt_builder, task_template
from service.serving_tasks import TaskServing
from service.state import AppState


class ControllerServing:
    def __init__(self, state: AppState, tasks: TaskServing) -> None:
        self.state = state
        self.tasks = tasks

    async def train(self, name: str, request: ControllerTrainRequest) -> JobCreated:
        task = await to_thread.run_sync(self.tasks.get_record, name)
        candidate_k = sorted(set(request.candidate_k))
        if len(candidate_k) < 2:
            raise APIError(400, "candidate_k needs at least two distinct counts", "invalid_value", "candidate_k")
        if candidate_k[-1] > self.state.settings.max_demos:
            raise APIError(400, f"candidate_k may not exceed {self.state.settings.max_demos}", "invalid_value",
                           "candidate_k")
        needed = MIN_TRAIN_SIZE + candidate_k[-1]
        if task.n_labeled < needed:
            raise APIError(400, f"training needs at least {needed} labeled examples ({MIN_TRAIN_SIZE} to hold back "
                           f"and {candidate_k[-1]} to serve as demonstrations); task '{name}' has {task.n_labeled}",
                           "not_enough_labeled_examples", "train_size")
        runtime = self.state.require_runtime()
        train_size = min(request.train_size, task.n_labeled - candidate_k[-1])

        async def body(progress: ProgressCallback) -> dict[str, Any]:
            rows = await to_thread.run_sync(self.state.store.load_pool, task.id)
            labeled = labeled_rows(rows)
            order = np.random.default_rng(request.seed).permutation(len(labeled))
            held = [labeled[i] for i in order[:train_size]]
            pool = pool_of(rows, [labeled[i] for i in order[train_size:]])
            template = task_template(task)
            scorer = runtime.scorer
            builder = prompt_builder(task, template, pool, scorer)
            data = await collect(builder, [rows.inputs[i] for i in held], rows.embeddings[held],
                                 [rows.labels[i] for i in held], task.labels, candidate_k, request.selection,
                                 request.seed, scorer, lambda f: progress(0.95 * f))
            figures = validate(data, candidate_k, request.seed)
            controller = MetaController(candidate_k=tuple(candidate_k)).fit(data.features, data.correct)
            summary = {
                "candidate_k": candidate_k, "train_size": train_size, "selection": request.selection,
                "seed": request.seed, "validation": figures,
                "created_at": datetime.now(UTC).isoformat(),
                "metadata": {"model": scorer.model_name, "labels": task.labels,
                             "scikit_learn": version("scikit-learn"), "pool_version": rows.pool_version},
            }
            await to_thread.run_sync(self.state.store.save_controller, task.id, pickle.dumps(controller), summary)
            return summary

        job = await self.state.jobs.submit("controller", name, body)
        return JobCreated(job_id=job.id)

    def get(self, name: str) -> ControllerObject:
        task = self.tasks.get_record(name)
        summary = self.state.store.controller_summary(task.id)
        if summary is None:
            raise APIError(404, f"task '{name}' has no fitted controller; train one with POST "
                           f"/v1/tasks/{name}/controller", "controller_not_found", "name")
        return ControllerObject.model_validate(summary)

    def delete(self, name: str) -> None:
        task = self.tasks.get_record(name)
        if not self.state.store.delete_controller(task.id):
            raise APIError(404, f"task '{name}' has no fitted controller", "controller_not_found", "name")
