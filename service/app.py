"""The FastAPI application. Nothing heavy happens at import time: the engine, the embedder and the store
are created in the lifespan, the engine in the background so that /health can answer 503 meanwhile."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI, Request, Response
from starlette.middleware.base import RequestResponseEndpoint

from service.body_limit import BodyLimitMiddleware
from service.config import Settings
from service.contexts import ContextCache
from service.errors import install_error_handlers
from service.jobs import JobRunner
from service.openapi_schema import published_schema
from service.orphan_guard import OrphanGuard, children
from service.reembedding import adopt_embedder
from service.retention import JobRetention
from service.routes import admin, ops, v1
from service.servings import Servings
from service.state import AppState, Runtime
from service.store import Store

logger = logging.getLogger(__name__)

RuntimeFactory = Callable[[Settings], Runtime]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


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
    from service.hidden_states import VllmHiddenScorer
    from service.model_files import resolve_model

    model_dir = resolve_model(settings.model, settings.model_cache)
    others = children()  # not the engine's: the guard leaves them alone
    scorer = (VllmHiddenScorer if settings.hidden_head else VllmScorer).start(model_dir, settings)
    guard: OrphanGuard | None = None
    try:
        guard = OrphanGuard.watch_children(started_before=others)
        if isinstance(scorer, VllmHiddenScorer):
            scorer.guard_with(guard.watch_new)
        return Runtime(scorer=scorer, embedder=SentenceEmbedder(), guard=guard)
    except Exception:  # the engine must not outlive a start that failed after it
        scorer.shutdown()
        if guard is not None:
            guard.close()
        raise


async def _open_state(settings: Settings, runtime: Runtime | None) -> AppState:
    """The store, the task contexts and the job runner, as every request shares them."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await to_thread.run_sync(Store, settings.resolved_database_url, settings.db_upgrade)
    contexts = ContextCache(store, settings.default_k, recent_queries=settings.domain_recent_queries,
                            ann_min_pool=settings.ann_min_pool or None,
                            ann_candidates=max(settings.ann_candidates, settings.max_demos),
                            auto_policy=settings.auto_count_policy)
    jobs = JobRunner(store, heartbeat_s=settings.job_heartbeat_s, stale_after_s=settings.job_stale_after_s)
    if settings.job_retention_days > 0:
        jobs.on_beat(JobRetention(store, settings.job_retention_days, settings.job_retention_sweep_s).sweep)
    jobs.start()  # its first beat fails jobs a dead process left unfinished
    return AppState(settings=settings, store=store, contexts=contexts, jobs=jobs, runtime=runtime)


async def _when_ready(serving: Servings) -> None:
    """What waits for the engine: batch jobs left unfinished by a stopped service, and due fits."""
    await serving.batches.resume_claimable()
    await serving.fit.fit_all_due()


async def _start_engine(state: AppState, serving: Servings, runtime_factory: RuntimeFactory,
                        owned: list[Runtime]) -> None:
    """Start the engine (a failure is kept for /health to report), then what waits for it."""
    began = time.perf_counter()
    try:
        runtime = await to_thread.run_sync(runtime_factory, state.settings)
    except Exception as exc:
        state.startup_error = str(exc)
        logger.exception("the engine failed to start")
        return
    owned.append(runtime)
    try:  # before anything is served: the pool's embeddings must be this embedder's
        await _adopt_embedder(state, runtime)
    except Exception as exc:
        state.startup_error = f"the examples could not be embedded again: {exc}"
        logger.exception("the examples could not be embedded again by the new embedder")
        return
    state.runtime = runtime
    state.metrics.engine_ready.set(1)
    logger.info("engine ready: %s in %.1f s", state.runtime.scorer.model_name, time.perf_counter() - began)
    await _when_ready(serving)


async def _adopt_embedder(state: AppState, runtime: Runtime) -> None:
    await to_thread.run_sync(adopt_embedder, state.store, runtime.embedder)
    state.contexts.embedder = runtime.embedder.identity


def _stop_runtime(runtime: Runtime) -> None:
    shutdown = getattr(runtime.scorer, "shutdown", None)
    if shutdown:
        shutdown()
    if runtime.guard is not None:
        runtime.guard.close()


def _lifespan(settings: Settings, runtime: Runtime | None, runtime_factory: RuntimeFactory | None) -> Lifespan:
    """The app's state while it serves: opened at start, the engine started in the background (unless
    ``runtime`` is given), and everything closed at the end; only an engine the app started is stopped."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _open_state(settings, runtime)
        serving = Servings.build(state)
        app.state.icl, app.state.serving = state, serving
        owned: list[Runtime] = []
        starter: asyncio.Task[None] | None = None
        if runtime is None and runtime_factory is not None:
            starter = asyncio.create_task(_start_engine(state, serving, runtime_factory, owned))
        elif runtime is not None:
            await _adopt_embedder(state, runtime)
            state.metrics.engine_ready.set(1)
            starter = asyncio.create_task(_when_ready(serving))
        try:
            yield
        finally:
            if starter is not None and not starter.done():
                starter.cancel()
            await state.jobs.shutdown()
            serving.batches.release_all()
            for item in owned:
                _stop_runtime(item)
            state.store.close()

    return lifespan


async def _record_metrics(request: Request, call_next: RequestResponseEndpoint) -> Response:
    """Every request's count and latency, by route and status."""
    began = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    state: AppState | None = getattr(request.app.state, "icl", None)
    if state is not None:
        state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        state.metrics.latency.labels(request.method, path).observe(time.perf_counter() - began)
    return response


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       batch_max_bytes=settings.max_batch_body_bytes)
    app.middleware("http")(_record_metrics)  # added last, so outermost: it counts the body limit's 413s too


def create_app(settings: Settings, runtime: Runtime | None = None,
               runtime_factory: RuntimeFactory | None = start_runtime) -> FastAPI:
    """Build the app. Pass ``runtime`` to serve an engine that already runs (tests share one per session);
    otherwise ``runtime_factory`` starts one in the background when the app starts."""
    app = FastAPI(
        title="iclserve",
        version="0.1.0",
        description="In-context-learning classification on vLLM: retrieved demonstrations, calibrated label "
        "probabilities, token budgets. Every endpoint, field, status and error: docs/api.md.",
        lifespan=_lifespan(settings, runtime, runtime_factory),
    )
    install_error_handlers(app)
    app.include_router(v1)
    app.include_router(admin)
    app.include_router(ops)
    app.openapi = lambda: published_schema(app, settings)  # type: ignore[method-assign]
    _add_middleware(app, settings)
    return app
