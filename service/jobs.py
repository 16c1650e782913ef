"""Background jobs: run a coroutine off the request, record status and progress in the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread

from service.store import JobRecord, Store

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
JobBody = Callable[[ProgressCallback], Awaitable[dict[str, Any]]]


class JobRunner:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, kind: str, task_name: str | None, body: JobBody) -> JobRecord:
        job = await to_thread.run_sync(self._store.create_job, kind, task_name)
        task = asyncio.create_task(self._run(job.id, body), name=f"job {job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job_id: str, body: JobBody) -> None:
        loop = asyncio.get_running_loop()

        def progress(fraction: float) -> None:
            """Callable from the loop or from a worker thread; the write itself runs off the loop."""
            value = min(max(float(fraction), 0.0), 1.0)
            asyncio.run_coroutine_threadsafe(to_thread.run_sync(self._store.update_progress, job_id, value), loop)

        await to_thread.run_sync(self._update, job_id, {"status": "running"})
        try:
            result = await body(progress)
        except Exception as exc:  # a failed job reports why instead of vanishing
            logger.exception("job %s failed", job_id)
            await to_thread.run_sync(self._update, job_id, {
                "status": "failed", "error": {"message": str(exc), "type": type(exc).__name__}})
            return
        await to_thread.run_sync(self._update, job_id, {"status": "succeeded", "progress": 1.0, "result": result})

    def _update(self, job_id: str, values: dict[str, Any]) -> None:
        self._store.update_job(job_id, **values)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
