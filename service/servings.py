"""The serving objects, built once per app in its lifespan and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass

from service.serving_annotation import AnnotationServing
from service.serving_batches import BatchServing
from service.serving_examples import ExampleServing
from service.serving_fit import FitServing
from service.serving_jobs import JobServing
from service.serving_ops import OpsServing
from service.serving_predict import PredictServing
from service.serving_tasks import TaskServing
from service.state import AppState


@dataclass(frozen=True)
class Servings:
    tasks: TaskServing
    examples: ExampleServing
    predict: PredictServing
    annotation: AnnotationServing
    fit: FitServing
    jobs: JobServing
    batches: BatchServing
    ops: OpsServing

    @classmethod
    def build(cls, state: AppState) -> Servings:
        tasks = TaskServing(state)
        jobs = JobServing(state)
        return cls(tasks=tasks, examples=ExampleServing(state, tasks), predict=PredictServing(state),
                   annotation=AnnotationServing(state, tasks), fit=FitServing(state, tasks),
                   jobs=jobs, batches=BatchServing(state, tasks, jobs), ops=OpsServing(state))
