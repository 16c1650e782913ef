"""The JSON objects the service answers with, as typed dictionaries (docs/api.md describes every field)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

InputValue = str | dict[str, str]


class FitState(TypedDict):
    state: Literal["none", "running", "fitted", "other_model"]
    pool_version: int | None
    job_id: str | None
    model: NotRequired[str | None]
    fit_id: NotRequired[str | None]
    expected: NotRequired[str | None]  # what the default request is served with and why, in one line


class Task(TypedDict):
    name: str
    labels: list[str]
    verbalizers: dict[str, str]
    template: str
    instruction: str | None
    separator: str
    default_k: int
    n_examples: int
    n_labeled: int
    controller: dict[str, Any] | None
    fit: FitState
    created_at: str


class ExampleIn(TypedDict):
    input: InputValue
    label: NotRequired[str | None]
    id: NotRequired[str]


class Example(TypedDict):
    id: str
    input: dict[str, str]
    label: str | None


class ExampleList(TypedDict):
    examples: list[Example]
    total: int


class ExamplesAdded(TypedDict):
    added: int
    n_examples: int
    n_labeled: int


class Prediction(TypedDict):
    label: str
    probs: dict[str, float]
    uncalibrated_probs: dict[str, float]
    k: int
    demo_ids: list[str]
    prompt_tokens: int
    computed_tokens: NotRequired[int]
    stages: NotRequired[list[int]]
    prompt: str | None
    calibration: str
    fit_id: NotRequired[str | None]
    # "head": the task's embedding head answered, no prompt; "hidden": its hidden-state head, on the prompt's
    # last hidden state.
    decision: NotRequired[Literal["tokens", "head", "hidden"]]


class Usage(TypedDict):
    prompt_tokens: int
    calibration_tokens: int
    calibration_cached_tokens: int
    total_tokens: int
    cached_tokens: int
    computed_tokens: NotRequired[int]


class PredictResponse(TypedDict):
    model: str
    demos_policy: NotRequired[Literal["fixed", "default", "cascade", "controller", "head", "hidden"]]
    fit: NotRequired[Literal["none", "fitted", "other_model", "unreadable"]]
    predictions: list[Prediction]
    usage: Usage


class AnnotationPlan(TypedDict):
    ids: list[str]
    method: str
    elapsed_s: float


class BatchProgress(TypedDict):
    total: int
    done: int
    errors: int
    runs: list[dict[str, Any]]


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["controller", "annotation", "batch"]


class Job(TypedDict):
    job_id: str
    kind: str
    task: NotRequired[str | None]
    status: JobStatus
    progress: float
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    batch: NotRequired[BatchProgress | None]
    created_at: NotRequired[str | None]
    updated_at: NotRequired[str | None]


class JobList(TypedDict):
    jobs: list[Job]
    total: int


class BatchItemError(TypedDict):
    message: str
    code: str


class BatchResultItem(TypedDict):
    index: int
    id: str | None
    status: Literal["pending", "succeeded", "failed"]
    prediction: NotRequired[Prediction | None]
    error: NotRequired[BatchItemError | None]


class BatchResults(TypedDict):
    job_id: str
    status: JobStatus
    total: int
    offset: int
    results: list[BatchResultItem]
