"""The FastAPI application. Nothing heavy happens at import time: the engine, the embedder and the store
are created in the lifespan, the engine in the background so that /health can answer 503 meanwhile."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.middleware.base import RequestResponseEndpoint
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.config import Settings
from service.contexts import ContextCache
from service.errors import APIError, envelope, install_error_handlers
from service.jobs import JobRunner
from service.orphan_guard import OrphanGuard, children
from service.protocol import BATCH_BODIES
from service.routes import admin, ops, v1
from service.servings import Servings
from service.state import AppState, Runtime
from service.store import Store

logger = logging.getLogger(__name__)

RuntimeFactory = Callable[[Settings], Runtime]
BATCH_PATH = re.compile(r"^/v1/tasks/[^/]+/batches/?$")


def start_runtime(settings: Settings) -> Runtime:
    """The real runtime: the default (or configured) model on vLLM, and the sentence embedder; or the fake
    engine (``engine: fake``)."""
    if settings.engine == "fake":
        from service.fake_engine import FakeEmbedder, FakeScorer

        scorer = FakeScorer(max_model_len=settings.max_model_len or 2048, tokens_per_s=settings.fake_tokens_per_s,
                            record_calls=False)
        return Runtime(scorer=scorer, embedder=FakeEmbedder())
    from service.embedder import SentenceEmbedder
    from service.engine import VllmScorer
    from service.model_files import resolve_model

    model_dir = resolve_model(settings.model, settings.model_cache)
    others = children()  # not the engine's: the guard leaves them alone
    scorer = VllmScorer.start(model_dir, settings)
    guard: OrphanGuard | None = None
    try:
        guard = OrphanGuard.watch_children(started_before=others)
        return Runtime(scorer=scorer, embedder=SentenceEmbedder(), guard=guard)
    except Exception:  # the engine must not outlive a start that failed after it
        scorer.shutdown()
        if guard is not None:
            guard.close()
        raise


class BodyLimitMiddleware:
    """413 in the error envelope for bodies over the limit: at once when Content-Length says so, and while
    reading a chunked body that has none (the app then sees a disconnect and its own answer is dropped)."""

    def __init__(self, app: ASGIApp, max_bytes: int, batch_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes or max_bytes

    def _error(self, size: str, limit: int) -> APIError:
        return APIError(413, f"request body has {size} bytes; the limit is {limit}", "body_too_large")

    def _limit(self, scope: Scope) -> int:
        """Batch jobs take large files; every other body keeps the ordinary limit."""
        if scope.get("method") == "POST" and BATCH_PATH.match(scope.get("path", "")):
            return self.batch_max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > limit:
            error = self._error(length, limit)
            await envelope(error.status, error.message, error.code)(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True  # the app sees the client go away; we answer for it
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large:
            error = self._error(f"more than {limit}", limit)
            await envelope(error.status, error.message, error.code)(scope, receive, send)


def _state_limits(components: dict[str, Any], settings: Settings) -> None:
    """The request limits this server's settings enforce, stated where a client reads them (the models carry
    only the fixed ones)."""

    def input_strings(schema: dict[str, Any]) -> None:
        for option in schema["anyOf"]:  # a string, or an object of strings
            (option if option["type"] == "string" else next(iter(option["patternProperties"].values())))[
                "maxLength"] = settings.max_input_chars

    def integer(schema: dict[str, Any]) -> dict[str, Any]:
        """The integer option of a field that also takes "auto" or null."""
        return next(option for option in schema["anyOf"] if option["type"] == "integer")

    predict = components["PredictRequest"]["properties"]
    predict["inputs"]["maxItems"] = settings.max_inputs
    input_strings(predict["inputs"]["items"])
    integer(predict["demos"])["maximum"] = settings.max_demos
    batch = components["BatchRequest"]["properties"]
    input_strings(batch["inputs"]["items"])
    integer(batch["demos"])["maximum"] = settings.max_demos
    input_strings(components["BatchLine"]["properties"]["input"])
    components["ExamplesAdd"]["properties"]["examples"]["maxItems"] = settings.max_examples_per_request
    input_strings(components["ExampleIn"]["properties"]["input"])
    demos = min(64, settings.max_demos)
    components["ControllerTrainRequest"]["properties"]["candidate_k"]["items"]["maximum"] = demos
    integer(components["TaskCreate"]["properties"]["default_k"])["maximum"] = demos


def _state_query_limits(paths: dict[str, Any], settings: Settings) -> None:
    """The batch route's query options: the same limits as its body's. Copies: the route's own parameters
    (openapi_extra) may be shared with other apps of the process."""
    operation = paths.get("/v1/tasks/{name}/batches", {}).get("post", {})
    parameters = copy.deepcopy(operation.get("parameters", []))
    for parameter in parameters:
        if parameter["name"] == "demos":
            next(option for option in parameter["schema"]["anyOf"] if option["type"] == "integer")[
                "maximum"] = settings.max_demos
    if operation:
        operation["parameters"] = parameters


def published_schema(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's OpenAPI document without the 422 answers it adds to every operation (validation errors are
    400 in the error envelope here, declared per operation), and with this server's request limits."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        for model in BATCH_BODIES:  # the batch route reads its body itself (JSON or JSON Lines)
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                schema["components"]["schemas"].setdefault(name, definition)
            schema["components"]["schemas"][model.__name__] = model_schema
        _state_limits(schema["components"]["schemas"], settings)
        _state_query_limits(schema["paths"], settings)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, runtime: Runtime | None = None,
               runtime_factory: RuntimeFactory | None = start_runtime) -> FastAPI:
    """Build the app. Pass ``runtime`` to serve an engine that already runs (tests share one per session);
    otherwise ``runtime_factory`` starts one in the background when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await to_thread.run_sync(Store, settings.resolved_database_url)
        contexts = ContextCache(store, settings.default_k, recent_queries=settings.domain_recent_queries,
                                ann_min_pool=settings.ann_min_pool or None,
                                ann_candidates=max(settings.ann_candidates, settings.max_demos))
        jobs = JobRunner(store, heartbeat_s=settings.job_heartbeat_s, stale_after_s=settings.job_stale_after_s)
        jobs.start()  # its first beat fails jobs a dead process left unfinished
        state = AppState(settings=settings, store=store, contexts=contexts, jobs=jobs, runtime=runtime)
        app.state.icl = state
        app.state.serving = Servings.build(state)
        owned: list[Runtime] = []
        starter: asyncio.Task[None] | None = None

        async def start() -> None:
            began = time.perf_counter()
            try:
                state.runtime = await to_thread.run_sync(runtime_factory, settings)  # type: ignore[arg-type]
            except Exception as exc:
                state.startup_error = str(exc)
                logger.exception("the engine failed to start")
                return
            owned.append(state.runtime)
            state.metrics.engine_ready.set(1)
            logger.info("engine ready: %s in %.1f s", state.runtime.scorer.model_name, time.perf_counter() - began)
            await when_ready()

        async def when_ready() -> None:
            """What waits for the engine: batch jobs left unfinished by a stopped service, and due fits."""
            await app.state.serving.batches.resume_claimable()
            await app.state.serving.controller.fit_all_due()

        if runtime is None and runtime_factory is not None:
            starter = asyncio.create_task(start())
        elif runtime is not None:
            state.metrics.engine_ready.set(1)
            starter = asyncio.create_task(when_ready())
        try:
            yield
        finally:
            if starter is not None and not starter.done():
                starter.cancel()
            await state.jobs.shutdown()
            app.state.serving.batches.release_all()
            for item in owned:
                shutdown = getattr(item.scorer, "shutdown", None)
                if shutdown:
                    shutdown()
                if item.guard is not None:
                    item.guard.close()
            store.close()

    app = FastAPI(
        title="iclserve",
        version="0.1.0",
        description="In-context-learning classification on vLLM: retrieved demonstrations, calibrated label "
        "probabilities, token budgets. Every endpoint, field, status and error: docs/api.md.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(admin)
    app.include_router(ops)
    app.openapi = lambda: published_schema(app, settings)  # type: ignore[method-assign]

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       batch_max_bytes=settings.max_batch_body_bytes)

    @app.middleware("http")  # added last, so outermost: it counts the body limit's 413s too
    async def record_metrics(request: Request, call_next: RequestResponseEndpoint) -> Response:
        began = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state: AppState | None = getattr(request.app.state, "icl", None)
        if state is not None:
            state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
            state.metrics.latency.labels(request.method, path).observe(time.perf_counter() - began)
        return response

    return app
