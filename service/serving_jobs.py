"""Background jobs: their status, progress and result."""

from __future__ import annotations

from service.errors import APIError, job_not_found
from service.protocol import BatchProgress, JobList, JobObject
from service.state import AppState
from service.store import BATCH_JOB, JobRecord, JobUnfinishedError


class JobServing:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def record(self, job_id: str) -> JobRecord:
        """The stored job; 404 when there is none."""
        job = self.state.store.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    def get(self, job_id: str) -> JobObject:
        return self.job_object(self.record(job_id))

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its batch inputs and results; 404 when there is none, 409 while it runs."""
        try:
            deleted = self.state.store.delete_job(job_id)
        except JobUnfinishedError as exc:
            raise APIError(409, f"job '{job_id}' is {exc.status}; cancel it (a batch job) or wait for it to end "
                                "before deleting it", "job_unfinished", "job_id") from None
        if not deleted:
            raise job_not_found(job_id)

    def list(self, task: str | None, kind: str | None, status: str | None, limit: int, offset: int) -> JobList:
        jobs, total = self.state.store.list_jobs(task, kind, status, limit, offset)
        return JobList(jobs=[self.job_object(job) for job in jobs], total=total)

    def job_object(self, job: JobRecord) -> JobObject:
        batch = self.state.store.get_batch(job.id) if job.kind == BATCH_JOB else None
        progress = (BatchProgress(total=batch.total, done=batch.done, errors=batch.errors, runs=batch.runs)
                    if batch is not None else None)
        return JobObject(job_id=job.id, kind=job.kind, task=job.task_name, status=job.status,  # type: ignore[arg-type]
                         progress=job.progress, result=job.result, error=job.error, batch=progress,
                         created_at=job.created_at, updated_at=job.updated_at)
