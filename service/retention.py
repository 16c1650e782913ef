"""Retention: finished jobs, with their batch inputs and results, are deleted once they are old, so that the
database does not grow with every batch forever. Fits and examples are never touched."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from anyio import to_thread

from service.store import Store

logger = logging.getLogger(__name__)

_PAGE = 100  # job ids read per query


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
        """Jobs deleted by this sweep (0 when one ran less than ``every_s`` ago)."""
        now = time.monotonic()
        if self._last is not None and now - self._last < self._every_s:
            return 0
        self._last = now
        deleted = await to_thread.run_sync(self.delete_old)
        if deleted:
            logger.info("retention: deleted %d finished jobs older than %s", deleted, self._keep)
        return deleted

    def delete_old(self) -> int:
        cutoff = datetime.now(UTC) - self._keep
        deleted = 0
        while ids := self._store.finished_jobs_before(cutoff, _PAGE):
            gone = sum(self._store.delete_job(job_id) for job_id in ids)
            deleted += gone
            if not gone and len(ids) < _PAGE:  # every one deleted by another replica meanwhile
                break
        return deleted
