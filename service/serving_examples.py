"""Examples: validate a batch whole, embed it once, store it with its embeddings."""

from __future__ import annotations

from service.errors import APIError
from service.inputs import template_input
from service.protocol import ExampleList, ExampleObject, ExamplePatch, ExamplesAdd, ExamplesAdded
from service.records import task_template
from service.serving_tasks import TaskServing
from service.state import AppState
from service.store import DuplicateExampleIdError, NewExample


class ExampleServing:
    def __init__(self, state: AppState, tasks: TaskServing) -> None:
        self.state = state
        self.tasks = tasks

    def add(self, name: str, request: ExamplesAdd) -> ExamplesAdded:
        settings = self.state.settings
        task = self.tasks.get_record(name)
        if len(request.examples) > settings.max_examples_per_request:
            raise APIError(413, f"{len(request.examples)} examples in one request; at most "
                           f"{settings.max_examples_per_request} are allowed, send them in several batches",
                           "too_many_examples", "examples")
        template = task_template(task)
        normalized: list[dict[str, str]] = []
        for index, example in enumerate(request.examples):
            normalized.append(template_input(example.input, template, settings.max_input_chars,
                                             f"examples[{index}].input"))
            if example.label is not None and example.label not in task.labels:
                raise APIError(400, f"examples[{index}].label '{example.label}' is not one of the task's labels "
                               f"{task.labels}", "invalid_label", f"examples[{index}].label")
        runtime = self.state.require_runtime()
        embeddings = runtime.embedder.embed([template.embedding_text(x) for x in normalized])
        batch = [NewExample(id=e.id, input=x, label=e.label, embedding=v)
                 for e, x, v in zip(request.examples, normalized, embeddings, strict=True)]
        try:
            added, n_examples, n_labeled = self.state.store.add_examples(task.id, batch)
        except DuplicateExampleIdError as exc:
            where = f"examples[{exc.index}].id" if exc.index is not None else "examples"
            raise APIError(409, f"example id '{exc.example_id}' is already taken in task '{name}'; ids must be "
                           "unique", "duplicate_id", where) from exc
        return ExamplesAdded(added=added, n_examples=n_examples, n_labeled=n_labeled)

    def list(self, name: str, labeled: bool | None, limit: int, offset: int) -> ExampleList:
        task = self.tasks.get_record(name)
        rows, total = self.state.store.list_examples(task.id, labeled, limit, offset)
        return ExampleList(examples=[ExampleObject(id=r.id, input=r.input, label=r.label) for r in rows],
                           total=total)

    def patch(self, name: str, example_id: str, request: ExamplePatch) -> ExampleObject:
        task = self.tasks.get_record(name)
        if request.label is not None and request.label not in task.labels:
            raise APIError(400, f"label '{request.label}' is not one of the task's labels {task.labels}",
                           "invalid_label", "label")
        row = self.state.store.set_label(task.id, example_id, request.label)
        if row is None:
            raise APIError(404, f"example '{example_id}' does not exist in task '{name}'", "example_not_found",
                           "id")
        return ExampleObject(id=row.id, input=row.input, label=row.label)
