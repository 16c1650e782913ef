"""Stored task data as the library's objects: a task's template, its labeled pool, its prompt builder."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.scoring import LabelScorer
from controller.templates import PromptTemplate
from service.store import PoolRows, TaskRecord, as_utc


def fit_id_of(stamp: datetime | None) -> str | None:
    """A fit's id: its stamp (when it was saved, UTC), so that every fit has one, those saved before ids
    included."""
    return None if stamp is None else "fit-" + as_utc(stamp).strftime("%Y%m%dT%H%M%S%fZ")


def task_template(task: TaskRecord) -> PromptTemplate:
    return PromptTemplate.parse(task.template, task.instruction, task.separator)


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


def prompt_builder(task: TaskRecord, template: PromptTemplate, pool: LabeledPool, scorer: LabelScorer) -> PromptBuilder:
    """The task's prompt builder on this pool, leaving room in the window for its longest verbalizer."""
    return PromptBuilder.for_scorer(template, task.verbalizers, pool, scorer)
