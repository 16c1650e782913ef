"""One real engine (vLLM on the default model) and one real embedder for the whole test session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from anyio import to_thread

from service.app import create_app
from service.config import Settings
from service.state import Runtime


@pytest.fixture(scope="session")
async def runtime() -> AsyncIterator[Runtime]:
    from service.embedder import SentenceEmbedder
    from service.engine import VllmScorer
    from service.hidden_states import VllmHiddenScorer
    from service.model_files import resolve_model

    settings = Settings()
    model_dir = await to_thread.run_sync(resolve_model, settings.model, settings.model_cache)
    # As the service starts it: with the hidden-state engine (started on first use) unless switched off.
    scorer = await to_thread.run_sync((VllmHiddenScorer if settings.hidden_head else VllmScorer).start, model_dir,
                                      settings)
    embedder = await to_thread.run_sync(SentenceEmbedder)
    yield Runtime(scorer=scorer, embedder=embedder)
    scorer.shutdown()


@asynccontextmanager
async def serve(data_dir: Path, runtime: Runtime, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the shared engine, its lifespan run as a server would run it."""
    app = create_app(Settings(data_dir=data_dir, **overrides), runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://iclserve", timeout=600) as client:
            yield client
