"""Stored task data as the library's objects: a task's template, its labeled pool, its prompt builder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.fitting import TaskExamples
from controller.planning import PromptBuilder
from controller.pool import LabeledPool
from controller.scoring import LabelScorer
from controller.templates import PromptTemplate
from service.store import PoolRows, TaskRecord, as_utc


def fit_id_of(stamp: datetime | None) -> str | None:
    """A fit's id: its stamp (when it was saved, UTC), so that every fit has one, those saved before ids
    included."""
    return None if stamp is None else "fit-" + as_utc(stamp).strftime("%Y%m%dT%H%M%S%fZ")


def of_another_embedder(summary: dict[str, Any], embedder: str | None) -> bool:
    """Whether a stored fit's heads read another embedder's embeddings than ``embedder`` (the one serving; None:
    not known yet). A fit made before fits recorded theirs is taken as this one's."""
    made_with = (summary.get("metadata") or {}).get("embedder")
    return embedder is not None and made_with is not None and made_with != embedder


def task_template(task: TaskRecord) -> PromptTemplate:
    return PromptTemplate.parse(task.template, task.instruction, task.separator)


def task_examples(rows: PoolRows) -> TaskExamples:
    """A task's stored examples as the library takes them."""
    return TaskExamples(ids=rows.ids, inputs=rows.inputs, labels=rows.labels, embeddings=rows.embeddings)


def prompt_builder(task: TaskRecord, template: PromptTemplate, pool: LabeledPool, scorer: LabelScorer) -> PromptBuilder:
    """The task's prompt builder on this pool, leaving room in the window for its longest verbalizer."""
    return PromptBuilder.for_scorer(template, task.verbalizers, pool, scorer)
