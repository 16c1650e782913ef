"""Background jobs: run a coroutine off the request, record status and progress in the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from anyio import to_thread

from service.store import JobRecord, Store

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]
JobBody = Callable[[ProgressCallback], Awaitable[dict[str, Any]]]
AfterJob = Callable[[], Awaitable[None]]
BeatHook = Callable[[], Awaitable[object]]


INTERRUPTED = "the process running this job stopped before it finished"


class JobHandedOver(Exception):
    """Raised by a job's body that another process has taken over: the job is left as that process has it."""


class JobRunner:
    """Runs jobs in this process. Every ``heartbeat_s`` it marks its jobs alive in the store and fails jobs
    nobody has marked for ``stale_after_s`` (their process died), so replicas sharing a database leave each
    other's running jobs alone."""

    def __init__(self, store: Store, heartbeat_s: float = 15.0, stale_after_s: float = 60.0) -> None:
        self._store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._heartbeat_s = heartbeat_s
        self._stale_after = timedelta(seconds=stale_after_s)
        self._heartbeat: asyncio.Task[None] | None = None
        self._beat_hooks: list[BeatHook] = []

    @property
    def stale_after(self) -> timedelta:
        return self._stale_after

    def on_beat(self, hook: BeatHook) -> None:
        """Run ``hook`` after every heartbeat (batch jobs look for work to resume there)."""
        self._beat_hooks.append(hook)

    def running(self, job_id: str) -> bool:
        return job_id in self._tasks

    def stop(self, job_ids: list[str]) -> None:
        """Cancel the jobs of these ids that this process runs (their stored status says why already)."""
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="job heartbeat")

    async def _beat(self) -> None:
        while True:
            try:
                await to_thread.run_sync(self._store.touch_jobs, list(self._tasks))
                await to_thread.run_sync(self._store.fail_stale_jobs, self._stale_after, INTERRUPTED)
            except Exception:  # a database hiccup must not stop the heartbeat for good
                logger.exception("job heartbeat failed")
            for hook in self._beat_hooks:
                try:
                    await hook()
                except Exception:
                    logger.exception("job heartbeat hook failed")
            await asyncio.sleep(self._heartbeat_s)

    async def submit(self, kind: str, task_name: str | None, body: JobBody, then: AfterJob | None = None) -> JobRecord:
        """Run ``body`` as a job; ``then``, if given, once its outcome is stored (succeeded or failed)."""
        job = await to_thread.run_sync(self._store.create_job, kind, task_name)
        self.run(job.id, body, then)
        return job

    def run(self, job_id: str, body: JobBody, then: AfterJob | None = None, resumable: bool = False) -> None:
        """Run ``body`` for a job already stored. A ``resumable`` job that the service's stop interrupts is left
        unfinished for a later start to resume (its body releases it), instead of failed."""
        task = asyncio.create_task(self._run(job_id, body, then, resumable), name=f"job {job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(self, job_id: str, body: JobBody, then: AfterJob | None, resumable: bool = False) -> None:
        loop = asyncio.get_running_loop()

        def progress(fraction: float) -> None:
            """Callable from the loop or from a worker thread; the write itself runs off the loop."""
            value = min(max(float(fraction), 0.0), 1.0)
            asyncio.run_coroutine_threadsafe(to_thread.run_sync(self._store.update_progress, job_id, value), loop)

        await to_thread.run_sync(self._update, job_id, {"status": "running"})
        try:
            result = await body(progress)
        except JobHandedOver:
            logger.warning("job %s was taken over by another process; this one stops running it", job_id)
            return
        except asyncio.CancelledError:  # the service is stopping: say so now rather than after a missed beat
            if not resumable:
                self._update(job_id, {"status": "failed", "error": {
                    "message": "the service stopped while this job ran", "type": "job_interrupted"}})
            raise
        except Exception as exc:  # a failed job reports why instead of vanishing
            logger.exception("job %s failed", job_id)
            await to_thread.run_sync(self._update, job_id, {
                "status": "failed", "error": {"message": str(exc), "type": type(exc).__name__}})
        else:
            await to_thread.run_sync(self._update, job_id, {"status": "succeeded", "progress": 1.0,
                                                            "result": result})
        if then is not None:
            await then()

    def _update(self, job_id: str, values: dict[str, Any]) -> None:
        self._store.update_job(job_id, **values)

    async def shutdown(self) -> None:
        tasks = [*self._tasks.values(), *([self._heartbeat] if self._heartbeat else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
