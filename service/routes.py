"""Thin HTTP routes: parse, call the serving object, return its result."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.errors import (
    APIError,
    empty_body,
    published_components,
    reads_as_json,
    request_view,
    unsupported_media_type,
)
from service.protocol import (
    AnnotationPlan,
    AnnotationPlanRequest,
    BatchResults,
    ControllerObject,
    ControllerTrainRequest,
    ErrorResponse,
    ExampleList,
    ExampleObject,
    ExamplePatch,
    ExamplesAdd,
    ExamplesAdded,
    JobCreated,
    JobKind,
    JobList,
    JobObject,
    JobStatus,
    ModelList,
    PredictRequest,
    PredictResponse,
    TaskCreate,
    TaskList,
    TaskObject,
)
from service.servings import Servings
from service.state import AppState

WHY = {
    400: "Invalid request: malformed JSON, a field out of its schema, or a value the service cannot use.",
    401: "Missing or wrong API key (when the service has keys); on /v1/admin/*, missing or wrong admin key.",
    403: "The admin endpoints are off (no ICL_ADMIN_KEYS).",
    404: "No such task, example or job.",
    409: "The name or id is already taken, the task is being fitted already, or the job has not ended (or has).",
    413: "The body, an input or a batch is over the service's limits, or an input over the model's window.",
    415: "The body's Content-Type is not one this operation reads.",
    429: "The engine has too many prompts in flight, or other batch uploads are being read; retry after "
         "`Retry-After` seconds.",
    503: "The engine is not ready (starting) or failed; retry after `Retry-After` seconds.",
}


def errors(*statuses: int) -> dict[int | str, dict]:
    """The error statuses an operation can answer with, each with the error envelope."""
    return {status: {"model": ErrorResponse, "description": WHY[status]} for status in statuses}


def state_of(request: Request) -> AppState:
    return request.app.state.icl


def serving(request: Request) -> Servings:
    return request.app.state.serving


def bearer_matches(header: str, keys: Sequence[str]) -> bool:
    """Whether an Authorization header carries one of ``keys``. Every key is compared, each in constant time,
    so how long a refusal takes says nothing about the keys."""
    scheme, _, token = header.partition(" ")
    given = token.strip().encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return scheme.lower() == "bearer" and any(matches)


def require_api_key(request: Request) -> None:
    keys = state_of(request).settings.api_keys
    if keys and not bearer_matches(request.headers.get("authorization", ""), keys):
        raise APIError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", "invalid_api_key",
                       type="authentication_error", headers={"WWW-Authenticate": "Bearer"})


def require_admin_key(request: Request) -> None:
    keys = state_of(request).settings.admin_keys
    if not keys:
        raise APIError(403, "the admin endpoints are off; set ICL_ADMIN_KEYS to turn them on", "admin_disabled",
                       type="permission_error")
    if not bearer_matches(request.headers.get("authorization", ""), keys):
        raise APIError(401, "missing or wrong admin key; send 'Authorization: Bearer <admin key>'",
                       "invalid_admin_key", type="authentication_error", headers={"WWW-Authenticate": "Bearer"})


async def json_body(request: Request) -> None:
    """A body FastAPI parses is JSON: another Content-Type, or none, is 415 (FastAPI would hand its bytes to
    validation), and an empty body where one is required is 400 saying what it must hold. Routes that read their
    body themselves (batches) have no body field."""
    field = getattr(request.scope.get("route"), "body_field", None)
    if field is None:
        return
    body = await request.body()  # read already, for the route: this is its cached copy
    content_type = request.headers.get("content-type", "")
    if body and not reads_as_json(content_type):
        raise unsupported_media_type(content_type, "a JSON body: send Content-Type: application/json")
    if not body and field.field_info.is_required():
        raise empty_body(request_view(request, "body"))


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key), Depends(json_body)], responses=errors(401))
# Not under the API keys: an admin key opens these, and nothing else does.
admin = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin_key)], responses=errors(401, 403))
ops = APIRouter()


@v1.post("/tasks", status_code=201, response_model=TaskObject, responses=errors(400, 409, 413, 415))
def create_task(body: TaskCreate, request: Request) -> TaskObject:
    return serving(request).tasks.create(body)


@v1.get("/tasks", response_model=TaskList)
def list_tasks(request: Request) -> TaskList:
    return TaskList(tasks=serving(request).tasks.list())


@v1.get("/tasks/{name}", response_model=TaskObject, responses=errors(404))
def get_task(name: str, request: Request) -> TaskObject:
    return serving(request).tasks.get(name)


@v1.delete("/tasks/{name}", status_code=204, responses=errors(404))
async def delete_task(name: str, request: Request) -> Response:
    await serving(request).tasks.delete(name)
    return Response(status_code=204)


@v1.post("/tasks/{name}/examples", response_model=ExamplesAdded, responses=errors(400, 404, 409, 413, 415, 503))
async def add_examples(name: str, body: ExamplesAdd, request: Request) -> ExamplesAdded:
    added = await to_thread.run_sync(serving(request).examples.add, name, body)
    await serving(request).fit.fit_if_due(name)
    return added


@v1.get("/tasks/{name}/examples", response_model=ExampleList, responses=errors(400, 404))
def list_examples(
    name: str, request: Request, labeled: bool | None = None,
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**62),
) -> ExampleList:
    return serving(request).examples.list(name, labeled, limit, offset)


@v1.patch("/tasks/{name}/examples/{example_id}", response_model=ExampleObject,
          responses=errors(400, 404, 413, 415))
async def patch_example(name: str, example_id: str, body: ExamplePatch, request: Request) -> ExampleObject:
    example = await to_thread.run_sync(serving(request).examples.patch, name, example_id, body)
    await serving(request).fit.fit_if_due(name)
    return example


@v1.post("/tasks/{name}/predict", response_model=PredictResponse, responses=errors(400, 404, 409, 413, 415, 429, 503))
async def predict(name: str, body: PredictRequest, request: Request) -> PredictResponse:
    return await serving(request).predict.create_predictions(name, body)


@v1.post("/tasks/{name}/annotation-plan", response_model=AnnotationPlan,
         responses={202: {"model": JobCreated, "description": "two-stage vote-k or a large pool: a job"},
                    **errors(400, 404, 413, 415, 503)})
async def annotation_plan(name: str, body: AnnotationPlanRequest, request: Request) -> AnnotationPlan | JSONResponse:
    plan = await serving(request).annotation.annotation_plan(name, body)
    if isinstance(plan, JobCreated):
        return JSONResponse(plan.model_dump(), status_code=202)
    return plan


@v1.post("/tasks/{name}/controller", status_code=202, response_model=JobCreated,
         responses=errors(400, 404, 409, 413, 415, 503))
async def train_controller(name: str, request: Request, body: ControllerTrainRequest | None = None) -> JobCreated:
    return await serving(request).fit.train(name, body or ControllerTrainRequest())


@v1.get("/tasks/{name}/controller", response_model=ControllerObject, responses=errors(404))
def get_controller(name: str, request: Request) -> ControllerObject:
    return serving(request).fit.get(name)


@v1.delete("/tasks/{name}/controller", status_code=204, responses=errors(404))
def delete_controller(name: str, request: Request) -> Response:
    serving(request).fit.delete(name)
    return Response(status_code=204)


@v1.get("/jobs", response_model=JobList, responses=errors(400))
def list_jobs(
    request: Request, task: str | None = Query(None, description="Only this task's jobs."),
    kind: JobKind | None = Query(None, description="Only jobs of this kind."),
    status: JobStatus | None = Query(None, description="Only jobs in this status."),
    limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0, le=2**62),
) -> JobList:
    """Jobs, newest first, a page at a time."""
    return serving(request).jobs.list(task, kind, status, limit, offset)


@v1.get("/jobs/{job_id}", response_model=JobObject, responses=errors(404))
def get_job(job_id: str, request: Request) -> JobObject:
    return serving(request).jobs.get(job_id)


@v1.delete("/jobs/{job_id}", status_code=204, responses=errors(404, 409))
def delete_job(job_id: str, request: Request) -> Response:
    """Delete a finished job (succeeded, failed or cancelled) and, for a batch job, its inputs and results."""
    serving(request).jobs.delete(job_id)
    return Response(status_code=204)


BATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "One BatchLine object per line; the "
                                        "options in the query string."}}}},
    "parameters": [
        {"name": option, "in": "query", "required": False, "schema": schema,
         "description": "JSON Lines bodies only: the predict option of this name."}
        for option, schema in (
            ("demos", {"anyOf": [{"type": "string", "enum": ["auto"]}, {"type": "integer", "minimum": 0}]}),
            ("selection", {"type": "string", "enum": ["knn", "random", "diverse"]}),
            ("calibration", {"type": "string", "enum": ["auto", "batch", "domain", "contextual", "none"]}),
            ("domain_calibration", {"type": "string", "enum": ["default", "reference"]}),
            ("seed", {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}),
            ("include_prompt", {"type": "boolean"}),
            ("max_prompt_tokens", {"type": "integer", "minimum": 1}))]}


@v1.post("/tasks/{name}/batches", status_code=202, response_model=JobCreated, openapi_extra=BATCH_BODY,
         responses=errors(400, 404, 413, 415, 429, 503))
async def create_batch(name: str, request: Request) -> JobCreated:
    """A batch job over up to 100,000 inputs: JSON (`BatchRequest`) or JSON Lines (one `BatchLine` a line)."""
    async with serving(request).batches.upload_slot():
        body = await request.body()
        return await serving(request).batches.create(name, body, request.headers.get("content-type", ""),
                                                     dict(request.query_params), published_components(request))


@v1.get("/jobs/{job_id}/results", response_model=BatchResults,
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                         "description": "A page of results, or with `format=jsonl` all of them, one a line."},
                   **errors(400, 404, 409)})
def job_results(
    job_id: str, request: Request, offset: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000),
    format: Literal["json", "jsonl"] = "json",  # noqa: A002
) -> BatchResults | StreamingResponse:
    batches = serving(request).batches
    if format == "jsonl":
        return StreamingResponse(batches.results_jsonl(job_id), media_type="application/x-ndjson")
    return batches.results(job_id, offset, limit)


@v1.post("/jobs/{job_id}/cancel", response_model=JobObject, responses=errors(404, 409))
def cancel_job(job_id: str, request: Request) -> JobObject:
    return serving(request).batches.cancel(job_id)


@admin.post("/reset-prefix-cache", responses=errors(503))
async def reset_prefix_cache(request: Request) -> JSONResponse:
    """Empty vLLM's prefix cache, so that a benchmark's runs do not reuse each other's prompts."""
    await serving(request).ops.reset_prefix_cache()
    return JSONResponse({})


@v1.get("/models", response_model=ModelList, responses=errors(503))
def list_models(request: Request) -> ModelList:
    return serving(request).ops.models()


@ops.get("/health", responses=errors(503))
async def health(request: Request) -> JSONResponse:
    await serving(request).ops.health()
    return JSONResponse({})


@ops.get("/metrics", response_class=Response,
         responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                          "description": "Prometheus text exposition."}})
def metrics(request: Request) -> Response:
    return Response(serving(request).ops.metrics(), media_type=CONTENT_TYPE_LATEST)
