"""Background jobs: their status, progress and result."""

from __future__ import annotations

from service.errors import APIError
from service.protocol import JobObject
from service.state import AppState


class JobServing:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def get(self, job_id: str) -> JobObject:
        job = self.state.store.get_job(job_id)
        if job is None:
            raise APIError(404, f"job '{job_id}' does not exist", "job_not_found", "job_id")
        return JobObject(job_id=job.id, status=job.status, progress=job.progress,  # type: ignore[arg-type]
                         result=job.result, error=job.error)
