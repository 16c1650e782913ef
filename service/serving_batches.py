"""Batch jobs: up to 100,000 inputs classified in the background, a chunk at a time, each chunk's outcomes
stored as it ends. A job that a stopped service leaves unfinished is resumed where it stopped: at once by the
next start when the service stopped cleanly, after ``job_stale_after_s`` when its process died.

Uploads are read by ``service.batch_uploads``; the engine takes the jobs' prompts behind interactive predicts
(``service.background``)."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from anyio import to_thread

from controller.errors import BudgetTooSmallError, NoHeadError, UnplannableInputError
from controller.predictor import PredictOptions
from service.background import BackgroundScorer, TokenWindow
from service.batch_uploads import BatchSchemas, checked_items, failed_item, parse_upload
from service.contexts import TaskContext
from service.errors import APIError, job_not_found
from service.inputs import template_input
from service.jobs import JobHandedOver, ProgressCallback
from service.protocol import (
    BatchItemError,
    BatchResultItem,
    BatchResults,
    JobCreated,
    JobObject,
    PredictionObject,
    PredictOptionsBody,
)
from service.records import task_template
from service.serving_jobs import JobServing
from service.serving_predict import check_demos, plan_predictions, planning_error, prediction_objects
from service.serving_tasks import TaskServing
from service.state import AppState, Runtime, TextEmbedder
from service.store import BATCH_JOB, UNFINISHED, BatchItem, BatchRecord, JobRecord

logger = logging.getLogger(__name__)

RESULTS_PAGE = 1_000  # rows read at a time for the JSON Lines download
UPLOADS_AT_ONCE = 2
CHUNK_ATTEMPTS = 3  # a chunk the engine or the database failed is tried again (1 s, then 2 s later)


def _chunk_budget(options: PredictOptions, chunk: int, total: int) -> PredictOptions:
    """A job's budget covers all its inputs: each chunk gets its share."""
    if options.max_prompt_tokens is None:
        return options
    return replace(options, max_prompt_tokens=max(1, math.floor(options.max_prompt_tokens * chunk / total)))


@dataclass(frozen=True)
class _JobRun:
    """One run of a batch job (its start, or a resumption): what each of its chunks is classified with."""

    job_id: str
    total: int  # the job's inputs, whose budget the chunks share
    context: TaskContext
    options: PredictOptions
    include_prompt: bool
    scorer: BackgroundScorer
    embedder: TextEmbedder


class BatchServing:
    def __init__(self, state: AppState, tasks: TaskServing, jobs: JobServing) -> None:
        self.state = state
        self.tasks = tasks
        self.jobs = jobs
        self.owner = f"proc-{uuid.uuid4().hex[:16]}"  # this process, as the store knows its batch jobs
        self._claiming = asyncio.Lock()
        self._uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)
        self._window = TokenWindow(state.settings.batch_inflight_tokens)
        state.jobs.on_beat(self.resume_claimable)

    # --- requests ----------------------------------------------------------------------------------------

    async def create(self, name: str, body: bytes, content_type: str, query: Mapping[str, str],
                     components: Mapping[str, Any] | None = None) -> JobCreated:
        """``components``: the published schemas, which the messages of a malformed body quote."""
        self.state.require_runtime()
        task = await to_thread.run_sync(self.tasks.get_record, name)
        schemas = BatchSchemas.of(components)
        options, items = await to_thread.run_sync(parse_upload, body, content_type, query, schemas)
        check_demos(options.demos, self.state.settings.max_demos, options.decision)
        items = await to_thread.run_sync(checked_items, items, task_template(task), self.state.settings.max_input_chars)
        stored = options.model_dump(mode="json")  # every option, defaults too: a resumption answers the same
        job = await to_thread.run_sync(self.state.store.create_batch, name, task.id, stored, self.owner, items)
        self._start(job)
        return JobCreated(job_id=job.id)

    def _batch_job(self, job_id: str) -> JobRecord:
        job = self.jobs.record(job_id)
        if job.kind != BATCH_JOB:
            raise APIError(409, f"job '{job_id}' is a {job.kind} job; only batch jobs have results to page through "
                           "and can be cancelled", "not_a_batch_job", "job_id")
        return job

    def cancel(self, job_id: str) -> JobObject:
        self._batch_job(job_id)
        changed, job = self.state.store.cancel_job(job_id)
        if job is None:  # deleted meanwhile (a finished job)
            raise job_not_found(job_id)
        if not changed and job.status != "cancelled":  # it ended first (maybe just now)
            raise APIError(409, f"job '{job_id}' has {job.status} already", "job_finished", "job_id")
        return self.jobs.job_object(job)

    @asynccontextmanager
    async def upload_slot(self) -> AsyncIterator[None]:
        """Batch bodies are large (up to ICL_MAX_BATCH_BODY_BYTES, several times that in memory once parsed):
        a few at a time per process; more answer 429."""
        if self._uploads.locked():
            raise APIError(429, "other batch uploads are being read; retry shortly", "overloaded",
                           type="rate_limit_error", headers={"Retry-After": "5"})
        async with self._uploads:
            yield

    def release_all(self) -> None:
        """The service stops: its unfinished batch jobs go back to queued, for the next start to resume."""
        self.state.store.release_batches(self.owner)

    def results(self, job_id: str, offset: int, limit: int) -> BatchResults:
        job = self._batch_job(job_id)
        batch = self.state.store.get_batch(job_id)
        if batch is None:  # deleted meanwhile
            raise job_not_found(job_id)
        items = self.state.store.batch_items(job_id, offset, limit)
        return BatchResults(job_id=job_id, status=job.status, total=batch.total, offset=offset,  # type: ignore[arg-type]
                            results=[self._result(item) for item in items])

    def results_jsonl(self, job_id: str) -> Iterator[bytes]:
        """Every input's result, one JSON object a line, in input order: read a page at a time."""
        self._batch_job(job_id)

        def lines() -> Iterator[bytes]:
            offset = 0
            while page := self.state.store.batch_items(job_id, offset, RESULTS_PAGE):
                yield b"".join(self._result(item).model_dump_json(exclude_none=True).encode() + b"\n"
                               for item in page)
                offset = page[-1].position + 1

        return lines()

    @staticmethod
    def _result(item: BatchItem) -> BatchResultItem:
        outcome = item.outcome
        if outcome is None:
            return BatchResultItem(index=item.position, id=item.client_id, status="pending")
        if "error" in outcome:
            return BatchResultItem(index=item.position, id=item.client_id, status="failed",
                                   error=BatchItemError(**outcome["error"]))
        return BatchResultItem(index=item.position, id=item.client_id, status="succeeded",
                               prediction=PredictionObject(**outcome["prediction"]))

    # --- running -----------------------------------------------------------------------------------------

    def _start(self, job: JobRecord) -> None:
        async def body(progress: ProgressCallback) -> dict[str, Any]:
            return await self._run(job.id, job.task_name or "")

        self.state.jobs.run(job.id, body, resumable=True)

    async def resume_claimable(self) -> None:
        """Take over and resume batch jobs nobody runs (once the engine is ready)."""
        if self.state.runtime is None:
            return
        async with self._claiming:
            claimed = await to_thread.run_sync(self.state.store.claim_batches, self.owner, self.state.jobs.stale_after)
            for job_id in claimed:
                if self.state.jobs.running(job_id):
                    continue
                job = await to_thread.run_sync(self.state.store.get_job, job_id)
                if job is not None:
                    logger.info("resuming batch job %s", job_id)
                    self._start(job)

    async def _run(self, job_id: str, task_name: str) -> dict[str, Any]:
        try:
            return await self._classify_all(job_id, task_name)
        except asyncio.CancelledError:  # the service stops: leave the job to the next start
            self.state.store.release_batches(self.owner, job_id)
            raise

    async def _still_mine(self, job_id: str) -> bool:
        """False once the job was cancelled or ended; JobHandedOver once another process has taken it over."""
        state = await to_thread.run_sync(self.state.store.batch_state, job_id)
        if state is None or state[0] not in UNFINISHED:
            return False
        if state[1] != self.owner:
            raise JobHandedOver(job_id)
        return True

    async def _classify_all(self, job_id: str, task_name: str) -> dict[str, Any]:
        run = await self._begin_run(job_id, task_name)
        stopped = await self._classify_chunks(run)
        return await self._summary(job_id, stopped)

    async def _begin_run(self, job_id: str, task_name: str) -> _JobRun:
        """What this run classifies with, recorded with the job: the task's current context (its pool and fit)
        and the options stored with the job."""
        batch = await to_thread.run_sync(self.state.store.get_batch, job_id)
        assert batch is not None
        runtime = self.state.require_runtime()
        context = await self._job_context(task_name, batch, runtime)
        await self._record_run(batch, context)
        request = PredictOptionsBody.model_validate(batch.options)
        scorer = BackgroundScorer(runtime.scorer, self._window, self.state, self.state.settings.batch_max_yield_s)
        return _JobRun(job_id, batch.total, context, request.to_options(), request.include_prompt, scorer,
                       runtime.embedder)

    async def _job_context(self, task_name: str, batch: BatchRecord, runtime: Runtime) -> TaskContext:
        """The context of the job's own task: the run fails once the task was deleted (even if created again)."""
        try:
            context = await to_thread.run_sync(self.state.contexts.get, task_name, runtime.scorer)
        except APIError as exc:
            raise RuntimeError(f"task '{task_name}' was deleted while the job waited") from exc
        if context.versions.task_id != batch.task_id:
            raise RuntimeError(f"task '{task_name}' was deleted and created again; this job's task is gone")
        return context

    async def _record_run(self, batch: BatchRecord, context: TaskContext) -> None:
        """The pool version and fit this run answers with, and the first input it classifies."""
        store = self.state.store
        pending = await to_thread.run_sync(store.batch_items, batch.job_id, 0, 1, True)
        await to_thread.run_sync(store.record_batch_run, batch.job_id, {
            "pool_version": context.pool.version, "fit": context.fit_state,
            "fit_stamp": context.versions.fit_stamp.isoformat() if context.versions.fit_stamp else None,
            "from_index": pending[0].position if pending else batch.total})

    async def _classify_chunks(self, run: _JobRun) -> bool:
        """The pending inputs, a chunk at a time in input order, ``batch_inflight_chunks`` chunks at once. True
        when the job was cancelled (or ended elsewhere) with inputs left; a chunk that failed for good fails the
        run once the chunks in flight are done."""
        settings = self.state.settings
        slots = asyncio.Semaphore(settings.batch_inflight_chunks)
        running: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []

        async def one_chunk(items: list[BatchItem]) -> None:
            try:
                await self._classify_chunk(run, items)
            except BaseException as exc:  # noqa: BLE001 — handed to the loop below, which re-raises it
                failure.append(exc)
            finally:
                slots.release()

        offset, stopped = 0, False
        try:
            while not failure:
                await slots.acquire()
                items = await to_thread.run_sync(self.state.store.batch_items, run.job_id, offset,
                                                 settings.batch_chunk_inputs, True)
                if not items or not await self._still_mine(run.job_id):
                    stopped = bool(items)
                    slots.release()
                    break
                offset = items[-1].position + 1
                task = asyncio.create_task(one_chunk(items))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
        except BaseException:
            await self._stop_chunks(running)
            raise
        if failure:
            raise failure[0]
        return stopped

    @staticmethod
    async def _stop_chunks(running: set[asyncio.Task[None]]) -> None:
        """Cancel the chunks in flight and wait for them: none may write after this run has released the job."""
        for task in running:
            task.cancel()
        await asyncio.shield(asyncio.gather(*running, return_exceptions=True))

    async def _classify_chunk(self, run: _JobRun, items: list[BatchItem]) -> None:
        """One chunk classified and its outcomes stored; tried again when the engine or the database fails, for
        a hiccup should not end a long job."""
        options = _chunk_budget(run.options, len(items), run.total)
        for attempt in range(CHUNK_ATTEMPTS):
            try:
                outcomes = await self._chunk(run, options, items)
                if outcomes is not None:
                    await to_thread.run_sync(self.state.store.save_batch_outcomes, run.job_id, outcomes)
                return
            except (JobHandedOver, asyncio.CancelledError):
                raise
            except Exception:
                if attempt + 1 == CHUNK_ATTEMPTS:
                    raise
                logger.warning("batch job %s: a chunk failed; trying it again", run.job_id, exc_info=True)
                await asyncio.sleep(2.0 ** attempt)

    async def _summary(self, job_id: str, stopped: bool) -> dict[str, Any]:
        """The job's result: its counts as stored, and whether it was cancelled."""
        final = await to_thread.run_sync(self.state.store.get_batch, job_id)
        if final is None:  # cancelled, then deleted while its last chunk was scored: nothing left to report on
            return {"cancelled": stopped}
        return {"total": final.total, "succeeded": final.done - final.errors, "failed": final.errors,
                "cancelled": stopped, "runs": final.runs}

    async def _chunk(self, run: _JobRun, options: PredictOptions, items: list[BatchItem]
                     ) -> dict[int, dict[str, Any]] | None:
        """Classify one chunk: each input's prediction, or the error that input alone gets; None when the job
        was cancelled before its prompts went to the engine."""
        queries, positions, outcomes = self._chunk_queries(run.context, items)
        while queries:
            try:
                predictor, plan = await to_thread.run_sync(plan_predictions, run.context, options, queries,
                                                           run.embedder)
                break
            except UnplannableInputError as exc:  # that input's own error; the others are planned again
                position = positions.pop(exc.index)
                queries.pop(exc.index)
                error = planning_error(exc)
                outcomes[position] = failed_item(
                    error, error.message.replace(f"inputs[{exc.index}]", f"inputs[{position}]", 1))
            except (BudgetTooSmallError, NoHeadError) as exc:  # every input's (a head: the fit was deleted since)
                error = planning_error(exc)
                message = (f"this input's share of the job's budget: {error.message}"
                           if isinstance(exc, BudgetTooSmallError) else None)
                for position in positions:
                    outcomes[position] = failed_item(error, message)
                return outcomes
        if not queries:
            return outcomes
        if not await self._still_mine(run.job_id):
            return None
        result = await predictor.run(plan, run.scorer)
        answers = prediction_objects(run.context, predictor, result, run.include_prompt)
        for position, prediction in zip(positions, answers, strict=True):
            outcomes[position] = {"prediction": prediction.model_dump(mode="json")}
        return outcomes

    def _chunk_queries(self, context: TaskContext, items: list[BatchItem]
                       ) -> tuple[list[dict[str, str]], list[int], dict[int, dict[str, Any]]]:
        """The chunk's inputs as the template's fields, with their positions; those it cannot take get their
        error (checked at upload: only a changed limit or template gets here)."""
        max_chars = self.state.settings.max_input_chars
        queries: list[dict[str, str]] = []
        positions: list[int] = []
        outcomes: dict[int, dict[str, Any]] = {}
        for item in items:
            try:
                queries.append(template_input(item.input, context.template, max_chars, f"inputs[{item.position}]"))
                positions.append(item.position)
            except APIError as exc:
                outcomes[item.position] = failed_item(exc)
        return queries, positions, outcomes
