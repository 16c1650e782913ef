"""Batch jobs: up to 100,000 inputs classified in the background, a chunk at a time, each chunk's outcomes
stored as it ends. A job that a stopped service leaves unfinished is resumed where it stopped: at once by the
next start when the service stopped cleanly, after ``job_stale_after_s`` when its process died.

Interactive predicts come first: batch prompts go to the engine one by one within a token window shared by
every batch job of the process, each only while no predict has prompts in flight, at a lower vLLM priority; so a
predict waits behind at most the window's tokens, and batch prompts never count against the predict admission
limit (no 429 because a batch runs)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from anyio import to_thread
from pydantic import BaseModel, ValidationError

from controller.errors import BudgetTooSmallError, UnplannableInputError
from controller.predictor import PredictOptions
from controller.scoring import ScoredPrompt
from controller.templates import PromptTemplate
from service.contexts import TaskContext
from service.errors import (
    APIError,
    body_parse_error,
    empty_body,
    media_type,
    not_utf8,
    reads_as_json,
    unsupported_media_type,
)
from service.inputs import template_input
from service.jobs import JobHandedOver, ProgressCallback
from service.protocol import (
    MAX_BATCH_INPUTS,
    BatchItemError,
    BatchLine,
    BatchRequest,
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
from service.state import AppState, ServedScorer
from service.store import BATCH_JOB, UNFINISHED, BatchItem, JobRecord
from service.validation import SchemaView, not_accepted, validation_message

logger = logging.getLogger(__name__)
BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/x-jsonlines")
# vLLM schedules lower values first (priority scheduling): predicts run at 0.
BATCH_PRIORITY = 1
RESULTS_PAGE = 1_000  # rows read at a time for the JSON Lines download
UPLOADS_AT_ONCE = 2
CHUNK_ATTEMPTS = 3  # a chunk the engine or the database failed is tried again (1 s, then 2 s later)


class TokenWindow:
    """How many prompt tokens batch jobs may have in the engine at once, across every job of the process. A
    predict's prompts wait in the engine behind the batch prompts already there (vLLM schedules running requests
    before waiting ones, priority aside), so this bounds what a predict waits for; a lone prompt larger than the
    window is let through when nothing else is in."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.used = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, tokens: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used == 0 or self.used + tokens <= self.tokens)
            self.used += tokens
        try:
            yield
        finally:
            async with self._changed:
                self.used -= tokens
                self._changed.notify_all()


class BackgroundScorer:
    """The engine as a batch job uses it: prompt by prompt, within the process's token window, each waiting for
    in-flight predicts first (at most ``max_yield_s``) and queued behind them in vLLM (priority scheduling);
    everything else is the engine's own."""

    def __init__(self, scorer: ServedScorer, window: TokenWindow, state: AppState, max_yield_s: float) -> None:
        self._scorer = scorer
        self._window = window
        self._state = state
        self._max_yield_s = max_yield_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scorer, name)

    async def _one(self, prompt: list[int], continuations: Sequence[str]) -> ScoredPrompt:
        await self._state.interactive_quiet(self._max_yield_s)
        async with self._window.hold(len(prompt)):
            return (await self._scorer.score([prompt], continuations, priority=BATCH_PRIORITY))[0]

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str]) -> list[ScoredPrompt]:
        return list(await asyncio.gather(*(self._one(list(p), continuations) for p in prompts)))


def _item_error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": code}}


@dataclass(frozen=True)
class BatchSchemas:
    """The published schemas a batch body is read against, for messages that say what each field accepts."""

    body: SchemaView
    line: SchemaView

    @classmethod
    def of(cls, components: Mapping[str, Any] | None = None) -> BatchSchemas:
        """From the published components (with this server's limits), or from the models themselves."""
        if components:
            return cls(SchemaView.of_component("BatchRequest", components),
                       SchemaView.of_component("BatchLine", components))
        return cls(SchemaView.of_model(BatchRequest), SchemaView.of_model(BatchLine))


def _validated(model: type[BaseModelT], raw: object, view: SchemaView) -> BaseModelT:
    """``raw`` as ``model``, or 400 in the envelope saying what is wrong, as for any other body."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc.errors(), view)
        raise APIError(400, message, "invalid_value", param) from exc


def _too_many_inputs(count: int) -> APIError:
    return APIError(413, f"{count} inputs in one batch; at most {MAX_BATCH_INPUTS} are allowed", "too_many_inputs",
                    "inputs")


Items = list[tuple[str | None, Any, dict[str, Any] | None]]  # (client id, input, outcome known already)
QUERY_OPTIONS = ("demos", "selection", "calibration", "domain_calibration", "seed", "include_prompt",
                 "max_prompt_tokens")


def _json(body: bytes, schemas: BatchSchemas) -> object:
    """The body as JSON, or the 400 that says why it is not, as for every other JSON body."""
    if not body:
        raise empty_body(schemas.body)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise body_parse_error(exc) from exc


def parse_json_body(body: bytes, query: Mapping[str, str],
                    schemas: BatchSchemas | None = None) -> tuple[PredictOptionsBody, Items]:
    """A JSON body: inputs and options in one object (options may come in the query string instead); a
    malformed body or field is a 400 for the whole job."""
    schemas = schemas or BatchSchemas.of()
    raw = _json(body, schemas)
    from_query = _query_options(query, schemas.body)
    if isinstance(raw, dict):
        both = sorted(set(raw) & set(from_query))
        if both:
            raise APIError(400, f"'{both[0]}' is given both in the body and in the query string; give it once",
                           "conflicting_options", both[0])
        raw = {**from_query, **raw}
    if isinstance(raw, dict) and isinstance(raw.get("inputs"), list) and len(raw["inputs"]) > MAX_BATCH_INPUTS:
        raise _too_many_inputs(len(raw["inputs"]))
    request = _validated(BatchRequest, raw, schemas.body)
    ids = request.ids or [None] * len(request.inputs)
    options = _validated(PredictOptionsBody, request.model_dump(exclude={"inputs", "ids"}, exclude_unset=True),
                         schemas.body)
    return options, [(client_id, value, None) for client_id, value in zip(ids, request.inputs, strict=True)]


def parse_jsonl_body(body: bytes, query: Mapping[str, str],
                     schemas: BatchSchemas | None = None) -> tuple[PredictOptionsBody, Items]:
    """A JSON Lines body: one ``{"input": ..., "id": ...}`` per line, options in the query string. A line that
    cannot be read becomes that input's error; the others are classified."""
    schemas = schemas or BatchSchemas.of()
    options = _validated(PredictOptionsBody, _query_options(query, schemas.body), schemas.body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(exc) from exc
    # JSON Lines ends a line at "\n" alone: str.splitlines would also split at U+2028 and other characters that
    # JSON strings may hold unescaped. A trailing "\r" is white space to json.loads.
    lines = [line for line in text.removeprefix("\ufeff").split("\n") if line.strip()]
    if not lines:
        raise APIError(400, "the request body has no input lines: send one JSON object a line, each "
                       f"{schemas.line.describe(schemas.line.root)}", "invalid_value", "body")
    if len(lines) > MAX_BATCH_INPUTS:
        raise _too_many_inputs(len(lines))
    items: Items = []
    for number, line in enumerate(lines):
        try:
            parsed = BatchLine.model_validate(json.loads(line))
        except (ValueError, RecursionError) as exc:
            message = (validation_message(exc.errors(), schemas.line, f"line {number + 1}: ", root="line")[0]
                       if isinstance(exc, ValidationError) else f"line {number + 1} is not valid JSON")
            items.append((None, None, _item_error(message, "invalid_line")))
            continue
        items.append((parsed.id, parsed.input, None))
    return options, items


def _query_options(query: Mapping[str, str], view: SchemaView) -> dict[str, Any]:
    """Predict options given as query parameters, as the body would carry them (``view``: the body's schema,
    which names what each option accepts)."""
    unknown = sorted(set(query) - set(QUERY_OPTIONS))
    if unknown:
        raise APIError(400, f"unknown query parameter '{unknown[0]}'; a batch takes {', '.join(QUERY_OPTIONS)}",
                       "invalid_value", unknown[0])
    raw: dict[str, Any] = {}
    for name, value in query.items():
        path = ("budget", "max_prompt_tokens") if name == "max_prompt_tokens" else (name,)
        if name in ("seed", "max_prompt_tokens") or (name == "demos" and value != "auto"):
            try:
                number = int(value)
            except ValueError as exc:
                raise APIError(400, not_accepted(view, path, value, name), "invalid_value", name) from exc
            if name == "max_prompt_tokens":
                raw["budget"] = {"max_prompt_tokens": number}
            else:
                raw[name] = number
        elif name == "include_prompt":
            if value.lower() not in ("true", "false", "1", "0"):
                raise APIError(400, not_accepted(view, path, value, name), "invalid_value", name)
            raw[name] = value.lower() in ("true", "1")
        else:
            raw[name] = value
    return raw


def checked_items(items: Items, template: PromptTemplate, max_chars: int) -> Items:
    """Inputs the template cannot take, or over the size limit, get their error now."""
    out = []
    for position, (client_id, value, outcome) in enumerate(items):
        if outcome is None:
            try:
                template_input(value, template, max_chars, f"inputs[{position}]")
            except APIError as exc:
                outcome = _item_error(exc.message, exc.code)
        out.append((client_id, value, outcome))
    return out


def _chunk_budget(options: PredictOptions, chunk: int, total: int) -> PredictOptions:
    """A job's budget covers all its inputs: each chunk gets its share."""
    if options.max_prompt_tokens is None:
        return options
    return replace(options, max_prompt_tokens=max(1, math.floor(options.max_prompt_tokens * chunk / total)))


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
        if media_type(content_type) in JSONL_TYPES:
            options, items = await to_thread.run_sync(parse_jsonl_body, body, query, schemas)
        elif reads_as_json(content_type):
            options, items = await to_thread.run_sync(parse_json_body, body, query, schemas)
        else:
            raise unsupported_media_type(content_type, "JSON (application/json) or JSON Lines "
                                         "(application/x-ndjson)")
        check_demos(options.demos, self.state.settings.max_demos)
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
        assert job is not None
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
        assert batch is not None
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
        store, settings = self.state.store, self.state.settings
        batch = await to_thread.run_sync(store.get_batch, job_id)
        assert batch is not None
        runtime = self.state.require_runtime()
        try:
            context = await to_thread.run_sync(self.state.contexts.get, task_name, runtime.scorer)
        except APIError as exc:
            raise RuntimeError(f"task '{task_name}' was deleted while the job waited") from exc
        if context.versions.task_id != batch.task_id:
            raise RuntimeError(f"task '{task_name}' was deleted and created again; this job's task is gone")
        pending = await to_thread.run_sync(store.batch_items, job_id, 0, 1, True)
        await to_thread.run_sync(store.record_batch_run, job_id, {
            "pool_version": context.pool.version, "fit": context.fit_state,
            "fit_stamp": context.versions.controller_stamp.isoformat() if context.versions.controller_stamp else None,
            "from_index": pending[0].position if pending else batch.total})
        request = PredictOptionsBody.model_validate(batch.options)
        options = replace(request.to_options(), auto_policy=settings.auto_count_policy)
        scorer = BackgroundScorer(runtime.scorer, self._window, self.state, settings.batch_max_yield_s)
        size = settings.batch_chunk_inputs
        slots = asyncio.Semaphore(settings.batch_inflight_chunks)
        running: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []
        offset, stopped = 0, False

        async def one_chunk(items: list[BatchItem]) -> None:
            try:
                chunk_options = _chunk_budget(options, len(items), batch.total)
                for attempt in range(CHUNK_ATTEMPTS):
                    try:
                        outcomes = await self._chunk(job_id, context, chunk_options, request.include_prompt, items,
                                                     scorer)
                        if outcomes is not None:
                            await to_thread.run_sync(store.save_batch_outcomes, job_id, outcomes)
                        return
                    except (JobHandedOver, asyncio.CancelledError):
                        raise
                    except Exception:  # the engine or the database: a hiccup should not end a long job
                        if attempt + 1 == CHUNK_ATTEMPTS:
                            raise
                        logger.warning("batch job %s: a chunk failed; trying it again", job_id, exc_info=True)
                        await asyncio.sleep(2.0 ** attempt)
            except BaseException as exc:  # noqa: BLE001 — handed to the loop below, which re-raises it
                failure.append(exc)
            finally:
                slots.release()

        try:
            while not failure:
                await slots.acquire()
                items = await to_thread.run_sync(store.batch_items, job_id, offset, size, True)
                if not items or not await self._still_mine(job_id):
                    stopped = bool(items)
                    slots.release()
                    break
                offset = items[-1].position + 1
                task = asyncio.create_task(one_chunk(items))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
        except BaseException:
            for task in running:
                task.cancel()
            # Wait for them: none may write after this run has released the job.
            await asyncio.shield(asyncio.gather(*running, return_exceptions=True))
            raise
        if failure:
            raise failure[0]
        final = await to_thread.run_sync(store.get_batch, job_id)
        assert final is not None
        return {"total": final.total, "succeeded": final.done - final.errors, "failed": final.errors,
                "cancelled": stopped, "runs": final.runs}

    async def _chunk(self, job_id: str, context: TaskContext, options: PredictOptions, include_prompt: bool,
                     items: list[BatchItem], scorer: BackgroundScorer) -> dict[int, dict[str, Any]] | None:
        """Classify one chunk: each input's prediction, or the error that input alone gets; None when the job
        was cancelled before its prompts went to the engine."""
        settings = self.state.settings
        outcomes: dict[int, dict[str, Any]] = {}
        queries: list[dict[str, str]] = []
        positions: list[int] = []
        for item in items:
            try:
                queries.append(template_input(item.input, context.template, settings.max_input_chars,
                                              f"inputs[{item.position}]"))
                positions.append(item.position)
            except APIError as exc:  # checked at upload: only a changed limit or template gets here
                outcomes[item.position] = _item_error(exc.message, exc.code)
        runtime = self.state.require_runtime()
        while queries:
            try:
                predictor, plan = await to_thread.run_sync(plan_predictions, context, options, queries,
                                                           runtime.embedder)
                break
            except UnplannableInputError as exc:  # that input's own error; the others are planned again
                position = positions.pop(exc.index)
                queries.pop(exc.index)
                message = str(exc).replace(f"inputs[{exc.index}]", f"inputs[{position}]", 1)
                outcomes[position] = _item_error(message, planning_error(exc).code)
            except BudgetTooSmallError as exc:
                for position in positions:
                    outcomes[position] = _item_error(f"this input's share of the job's budget: {exc}",
                                                     "budget_too_small")
                return outcomes
        if not queries:
            return outcomes
        if not await self._still_mine(job_id):
            return None
        result = await predictor.run(plan, scorer)
        answers = prediction_objects(context, predictor, result, include_prompt)
        for position, prediction in zip(positions, answers, strict=True):
            outcomes[position] = {"prediction": prediction.model_dump(mode="json")}
        return outcomes
