"""Annotation plans: which unlabeled examples of a task's pool to label first."""

from __future__ import annotations

import time

from controller.annotation import ideal, random_selection, votek
from service.errors import APIError
from service.protocol import AnnotationPlan, AnnotationPlanRequest
from service.serving_tasks import TaskServing
from service.state import AppState


class AnnotationServing:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.tasks = TaskServing(state)

    def plan(self, name: str, request: AnnotationPlanRequest) -> AnnotationPlan:
        """Runs in a worker thread (sync route): a pool of 10,000 takes a few seconds."""
        task = self.tasks.get_record(name)
        rows = self.state.store.load_pool(task.id)
        unlabeled = [i for i, label in enumerate(rows.labels) if label is None]
        if not unlabeled:
            raise APIError(400, f"task '{name}' has no unlabeled examples to choose from; add examples without a "
                           "label first", "no_unlabeled_examples", "name")
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
