"""Tasks: validate a definition, store it, describe it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from anyio import to_thread

from controller.counts import AutoPolicy, TaskDefaults
from controller.templates import PromptTemplate, TemplateError
from service.errors import APIError, task_not_found
from service.protocol import ControllerObject, FitState, TaskCreate, TaskObject
from service.records import fit_id_of, of_another_embedder
from service.state import AppState
from service.store import FIT_JOB, JobRecord, NameTakenError, TaskRecord


def fit_state(controller: dict[str, Any] | None, running: JobRecord | None, serving_model: str | None = None,
              stamp: datetime | None = None, auto_policy: AutoPolicy = "cascade",
              serving_embedder: str | None = None) -> FitState:
    """Running, fitted, none, or fitted with another model than ``serving_model`` (when one is serving); and
    what the fit's choice expects, where that choice serves the default request (a fit of this model, and
    the cascade policy: the meta-controller policy serves what the choice did not weigh)."""
    metadata = controller.get("metadata", {}) if controller is not None else {}
    model = metadata.get("model") or None
    if running is not None:
        state = "running"
    elif controller is None:
        state = "none"
    elif serving_model is not None and model is not None and model != serving_model:
        state = "other_model"
    elif of_another_embedder(controller, serving_embedder):
        state = "other_model"  # its heads read another embedder's embeddings
    else:
        state = "fitted"
    choice = controller.get("choice") if controller is not None else None
    serves = state != "other_model" and auto_policy == "cascade" and isinstance(choice, dict)
    return FitState(state=state, pool_version=metadata.get("pool_version"),
                    job_id=running.id if running is not None else None, model=model, fit_id=fit_id_of(stamp),
                    expected=choice.get("reason") if serves else None)


def controller_object(summary: dict[str, Any], stamp: datetime) -> ControllerObject:
    """A stored fit's summary as the API describes it, with the fit's id (from its stamp: fits stored before
    ids have one too)."""
    return ControllerObject.model_validate({**summary, "fit_id": fit_id_of(stamp)})


def task_object(task: TaskRecord, default_k: int, stored: tuple[dict[str, Any], datetime] | None = None,
                running: JobRecord | None = None, serving_model: str | None = None,
                auto_policy: AutoPolicy = "cascade", serving_embedder: str | None = None) -> TaskObject:
    """``default_k``: the service's, for a task created without one. ``stored``: the task's fit's summary and
    stamp, if it has one."""
    controller, stamp = stored or (None, None)
    return TaskObject(
        name=task.name, labels=task.labels, verbalizers=task.verbalizers, template=task.template,
        instruction=task.instruction, separator=task.separator,
        default_k=TaskDefaults.resolve(task.default_k, default_k).default_k,
        n_examples=task.n_examples, n_labeled=task.n_labeled,
        controller=controller_object(*stored) if stored is not None else None,
        fit=fit_state(controller, running, serving_model, stamp, auto_policy, serving_embedder),
        created_at=task.created_at,
    )


class TaskServing:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def get_record(self, name: str) -> TaskRecord:
        task = self.state.store.get_task(name)
        if task is None:
            raise task_not_found(name)
        return task

    def create(self, request: TaskCreate) -> TaskObject:
        labels = [label for label in request.labels]
        if any(not label.strip() for label in labels):
            raise APIError(400, "labels must be non-empty strings", "invalid_labels", "labels")
        if len(set(labels)) != len(labels):
            raise APIError(400, "labels must be distinct", "invalid_labels", "labels")
        given = request.verbalizers or {}
        unknown = [key for key in given if key not in labels]
        if unknown:
            raise APIError(400, f"verbalizers name unknown label(s) {unknown}; labels are {labels}",
                           "invalid_verbalizers", "verbalizers")
        verbalizers = {label: given.get(label, label) for label in labels}
        if any(not v.strip() for v in verbalizers.values()):
            raise APIError(400, "verbalizers must be non-empty", "invalid_verbalizers", "verbalizers")
        if len(set(verbalizers.values())) != len(verbalizers):
            raise APIError(400, "two labels share a verbalizer, so the model could not tell them apart",
                           "invalid_verbalizers", "verbalizers")
        if request.default_k is not None and request.default_k > self.state.settings.max_demos:
            raise APIError(400, f"default_k={request.default_k} is more than the limit of "
                           f"{self.state.settings.max_demos}", "invalid_value", "default_k")
        try:
            parsed = PromptTemplate.parse(request.template, request.instruction, request.separator)
        except TemplateError as exc:
            raise APIError(400, str(exc), "invalid_template", "template") from exc
        # New tasks' field names are ASCII, as the published pattern says (tasks stored before keep theirs).
        if not all(name.isascii() for name in parsed.fields):
            raise APIError(400, "template field names must be ASCII identifiers such as {text}", "invalid_template",
                           "template")
        try:
            task = self.state.store.create_task(
                name=request.name, labels=labels, verbalizers=verbalizers, template=request.template,
                instruction=request.instruction, separator=request.separator, default_k=request.default_k,
            )
        except NameTakenError as exc:
            raise APIError(409, f"task '{request.name}' already exists; pick another name or DELETE it first",
                           "name_taken", "name") from exc
        return task_object(task, self.state.settings.default_k)

    def describe(self, task: TaskRecord) -> TaskObject:
        store = self.state.store
        runtime = self.state.runtime
        return task_object(task, self.state.settings.default_k, store.fit_summary_and_stamp(task.id),
                           store.unfinished_job(FIT_JOB, task.name),
                           runtime.scorer.model_name if runtime is not None else None,
                           self.state.settings.auto_count_policy,
                           runtime.embedder.identity if runtime is not None else None)

    def get(self, name: str) -> TaskObject:
        return self.describe(self.get_record(name))

    def list(self) -> list[TaskObject]:
        return [self.describe(t) for t in self.state.store.list_tasks()]

    async def delete(self, name: str) -> None:
        """Delete the task; its unfinished jobs fail, and those this process runs stop now (a fit of the old
        task would otherwise go on taking the engine's time)."""
        stopped = await to_thread.run_sync(self.state.store.delete_task, name)
        if stopped is None:
            raise task_not_found(name)
        self.state.contexts.forget(name)
        self.state.jobs.stop(stopped)
