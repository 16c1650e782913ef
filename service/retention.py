"""Retention: finished jobs, with their batch inputs and results, are deleted once they are old, so that the
database does not grow with every batch forever. Fits and examples are never touched."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from anyio import to_thread

from service.store import Store

logger = logging.getLogger(__name__)

# Jobs deleted per sweep: the sweep runs inside the job heartbeat, which must beat again well within
# ICL_JOB_STALE_AFTER_S (a full 100,000-input batch job takes about a second to delete on SQLite). A backlog
# (a database upgraded with months of jobs) goes over the next beats.
PER_SWEEP = 10


class JobRetention:
    """Deletes jobs that ended (succeeded, failed or cancelled) and were last updated more than ``days`` ago,
    at most once every ``every_s`` seconds: run from the job heartbeat. Replicas sharing a database may sweep
    at once; a job another one deleted first is skipped."""

    def __init__(self, store: Store, days: float, every_s: float = 3600.0) -> None:
        self._store = store
        self._keep = timedelta(days=days)
        self._every_s = every_s
        self._last: float | None = None

    async def sweep(self) -> int:
        """Jobs deleted by this sweep: up to ``PER_SWEEP``, 0 when one ran less than ``every_s`` ago and left
        none behind."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self._every_s:
            return 0
        deleted, more = await to_thread.run_sync(self.delete_old)
        self._last = None if more else now  # a backlog goes on at the next beat
        if deleted:
            logger.info("retention: deleted %d finished jobs older than %s", deleted, self._keep)
        return deleted

    def delete_old(self, limit: int | None = None) -> tuple[int, bool]:
        """Delete up to ``limit`` (``PER_SWEEP``) of the oldest expired jobs: how many this call deleted
        (another replica may have taken some), and whether more may be left."""
        limit = limit or PER_SWEEP
        ids = self._store.finished_jobs_before(datetime.now(UTC) - self._keep, limit)
        return sum(self._store.delete_job(job_id) for job_id in ids), len(ids) == limit
