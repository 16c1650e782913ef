"""Thin HTTP routes: parse, call the serving object, return its result."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.errors import APIError
from service.protocol import (
    AnnotationPlan,
    AnnotationPlanRequest,
    ControllerTrainRequest,
    ErrorResponse,
    ExampleList,
    ExampleObject,
    ExamplePatch,
    ExamplesAdd,
    ExamplesAdded,
    JobCreated,
    JobObject,
    ModelCard,
    ModelList,
    PredictRequest,
    PredictResponse,
    TaskCreate,
    TaskList,
    TaskObject,
)
from service.serving_annotation import AnnotationServing
from service.serving_controller import ControllerServing
from service.serving_examples import ExampleServing
from service.serving_predict import PredictServing
from service.serving_tasks import TaskServing
from service.state import AppState

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 503)}


def state_of(request: Request) -> AppState:
    return request.app.state.icl


def require_api_key(request: Request) -> None:
    keys = state_of(request).settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() not in keys:
        raise APIError(401, "missing or wrong API key; send 'Authorization: Bearer <key>'", "invalid_api_key",
                       type="authentication_error", headers={"WWW-Authenticate": "Bearer"})


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=_ERRORS)
ops = APIRouter()


@v1.post("/tasks", status_code=201, response_model=TaskObject)
def create_task(body: TaskCreate, request: Request) -> TaskObject:
    return TaskServing(state_of(request)).create(body)


@v1.get("/tasks", response_model=TaskList)
def list_tasks(request: Request) -> TaskList:
    return TaskList(tasks=TaskServing(state_of(request)).list())


@v1.get("/tasks/{name}", response_model=TaskObject)
def get_task(name: str, request: Request) -> TaskObject:
    return TaskServing(state_of(request)).get(name)


@v1.delete("/tasks/{name}", status_code=204)
def delete_task(name: str, request: Request) -> Response:
    TaskServing(state_of(request)).delete(name)
    return Response(status_code=204)


@v1.post("/tasks/{name}/examples", response_model=ExamplesAdded)
def add_examples(name: str, body: ExamplesAdd, request: Request) -> ExamplesAdded:
    return ExampleServing(state_of(request)).add(name, body)


@v1.get("/tasks/{name}/examples", response_model=ExampleList)
def list_examples(
    name: str, request: Request, labeled: bool | None = None,
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=2**62),
) -> ExampleList:
    return ExampleServing(state_of(request)).list(name, labeled, limit, offset)


@v1.patch("/tasks/{name}/examples/{example_id}", response_model=ExampleObject)
def patch_example(name: str, example_id: str, body: ExamplePatch, request: Request) -> ExampleObject:
    return ExampleServing(state_of(request)).patch(name, example_id, body)


@v1.post("/tasks/{name}/predict", response_model=PredictResponse)
async def predict(name: str, body: PredictRequest, request: Request) -> PredictResponse:
    return await PredictServing(state_of(request)).predict(name, body)


@v1.post("/tasks/{name}/annotation-plan", response_model=AnnotationPlan,
         responses={202: {"model": JobCreated, "description": "two-stage vote-k or a large pool: a job"}})
async def annotation_plan(name: str, body: AnnotationPlanRequest, request: Request) -> AnnotationPlan | JSONResponse:
    plan = await AnnotationServing(state_of(request)).plan(name, body)
    if isinstance(plan, JobCreated):
        return JSONResponse(plan.model_dump(), status_code=202)
    return plan


@v1.post("/tasks/{name}/controller", status_code=202, response_model=JobCreated)
async def train_controller(name: str, request: Request, body: ControllerTrainRequest | None = None) -> JobCreated:
    return await ControllerServing(state_of(request)).train(name, body or ControllerTrainRequest())


@v1.get("/tasks/{name}/controller")
def get_controller(name: str, request: Request) -> dict:
    return ControllerServing(state_of(request)).get(name)


@v1.delete("/tasks/{name}/controller", status_code=204)
def delete_controller(name: str, request: Request) -> Response:
    ControllerServing(state_of(request)).delete(name)
    return Response(status_code=204)


@v1.get("/jobs/{job_id}", response_model=JobObject)
def get_job(job_id: str, request: Request) -> JobObject:
    job = state_of(request).store.get_job(job_id)
    if job is None:
        raise APIError(404, f"job '{job_id}' does not exist", "job_not_found", "job_id")
    return JobObject(job_id=job.id, status=job.status, progress=job.progress,  # type: ignore[arg-type]
                     result=job.result, error=job.error)


@v1.post("/admin/reset-prefix-cache")
async def reset_prefix_cache(request: Request) -> JSONResponse:
    """Empty vLLM's prefix cache, so that a benchmark's runs do not reuse each other's prompts."""
    await state_of(request).require_runtime().scorer.reset_prefix_cache()
    return JSONResponse({})


@v1.get("/models", response_model=ModelList)
def list_models(request: Request) -> ModelList:
    runtime = state_of(request).require_runtime()
    return ModelList(data=[ModelCard(id=runtime.scorer.model_name, created=int(time.time()))])


@ops.get("/health")
async def health(request: Request) -> JSONResponse:
    state = state_of(request)
    runtime = state.require_runtime()
    try:
        await runtime.scorer.check_health()
    except Exception as exc:
        raise APIError(503, f"the engine does not answer: {exc}", "engine_unhealthy", type="service_unavailable",
                       headers={"Retry-After": "5"}) from exc
    return JSONResponse({})


@ops.get("/metrics")
def metrics(request: Request) -> Response:
    state = state_of(request)
    if state.runtime is not None:
        state.metrics.engine_queue_depth.set(state.runtime.scorer.queue_depth())
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
