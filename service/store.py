"""Persistence with SQLAlchemy: tasks, their examples (with embeddings) and jobs.

SQLite file by default (WAL mode), PostgreSQL by URL. Every write is one transaction: a request that fails
leaves nothing half-written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from service import failpoints
from service.schema import ensure_schema

logger = logging.getLogger(__name__)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the store writes UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class TaskRow(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    labels: Mapped[list] = mapped_column(JSON, nullable=False)
    verbalizers: Mapped[dict] = mapped_column(JSON, nullable=False)
    template: Mapped[str] = mapped_column(Text, nullable=False)
    instruction: Mapped[str | None] = mapped_column(Text, nullable=True)
    separator: Mapped[str] = mapped_column(Text, nullable=False)
    default_k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Bumped on every change to the examples, so in-memory pool caches know when to reload.
    pool_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_now)


class ExampleRow(Base):
    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("task_id", "example_id"),
                      Index("examples_task_changed", "task_id", "changed_version"))
    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True, nullable=False)
    example_id: Mapped[str] = mapped_column(String(128), nullable=False)
    input: Mapped[dict] = mapped_column(JSON, nullable=False)
    label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # float32, L2-normalised
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_now)
    # The task's pool version that added the row or last set its label: a cached pool reads only the rows
    # changed since its own version. 0 for rows stored before the column existed (older than any cache).
    changed_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class FitRow(Base):
    """A task's fit: the pickled ``TaskFit`` (cascade, meta-controller, calibration) and its summary (validation
    figures, metadata). The table keeps the name it had when a fit was the meta-controller alone."""

    __tablename__ = "controllers"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    summary: Mapped[dict] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_now)


class SettingRow(Base):
    """What the service records about its store as a whole: which embedder made the examples' embeddings."""

    __tablename__ = "service_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    task_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=_now)


class BatchRow(Base):
    """A batch job's request: what it classifies with, what it has done, and which process runs it."""

    __tablename__ = "batches"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[int] = mapped_column(Integer, nullable=False)
    options: Mapped[dict] = mapped_column(JSON, nullable=False)  # the predict options, inputs aside
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # What it classified with: the pool version and fit at its start, and again at each resumption.
    runs: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    # The process running it; None while nobody does (queued, or released by a service that stopped).
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BatchItemRow(Base):
    """One input of a batch job and, once classified, its outcome: a prediction or an error."""

    __tablename__ = "batch_items"
    job_id: Mapped[str] = mapped_column(ForeignKey("batches.job_id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # SQL NULL for None (JSON's own null would not match IS NULL)
    input: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)  # None: the line was unreadable
    outcome: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)  # None: not classified yet


# Jobs of these kinds run once per task at a time, across every replica sharing the database: checking for a
# running one is a read that two replicas can pass together, so a partial unique index refuses the second.
FIT_JOB = "controller"  # the fit job's kind, as stored and as the API answers it (named when a fit was the
# meta-controller alone)
BATCH_JOB = "batch"  # resumable: a stale one is taken over and resumed, not failed
EXCLUSIVE_JOB_KINDS = (FIT_JOB,)
UNFINISHED = ("queued", "running")
# Batch items deleted per transaction when a job goes: another writer waits behind one chunk, not a whole
# 100,000-input job.
DELETE_CHUNK = 5_000
_EXCLUSIVE_UNFINISHED = and_(JobRow.kind.in_(EXCLUSIVE_JOB_KINDS), JobRow.status.in_(UNFINISHED))
ONE_UNFINISHED_JOB = Index("one_unfinished_exclusive_job", JobRow.kind, JobRow.task_name, unique=True,
                           sqlite_where=_EXCLUSIVE_UNFINISHED, postgresql_where=_EXCLUSIVE_UNFINISHED)


class NameTakenError(Exception):
    pass


class JobRunningError(Exception):
    """A job of an exclusive kind is already queued or running for the task (maybe on another replica)."""


class JobUnfinishedError(Exception):
    """The job is queued or running: it must end (or be cancelled) before it is deleted."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class DuplicateExampleIdError(Exception):
    def __init__(self, example_id: str, index: int | None) -> None:
        super().__init__(example_id)
        self.example_id, self.index = example_id, index


@dataclass(frozen=True)
class TaskRecord:
    id: int
    name: str
    labels: list[str]
    verbalizers: dict[str, str]
    template: str
    instruction: str | None
    separator: str
    default_k: int | None
    pool_version: int
    created_at: datetime
    n_examples: int
    n_labeled: int


@dataclass(frozen=True)
class ExampleRecord:
    id: str
    input: dict[str, str]
    label: str | None


@dataclass(frozen=True)
class NewExample:
    id: str | None
    input: dict[str, str]
    label: str | None
    embedding: np.ndarray


@dataclass(frozen=True)
class PoolRows:
    """Everything retrieval and calibration need from a task's examples, loaded at once."""

    pool_version: int
    ids: list[str]
    inputs: list[dict[str, str]]
    labels: list[str | None]
    embeddings: np.ndarray
    # The rows' storage keys, ascending (the rows' order): what says which row a later change is about.
    row_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PoolChanges:
    """The rows added or relabeled after a pool version (``rows``, in row order; their pool_version is the
    newest read, possibly newer than the changes), and the task's number of examples as read with them, by
    which a cached pool checks that the changes brought it where the store is."""

    rows: PoolRows
    n_examples: int


@dataclass(frozen=True)
class TaskVersions:
    """What says whether a cached view of a task is still current: the task itself (a re-created task may get
    a deleted one's id), its pool version and its fit's stamp (None: no fit)."""

    task_id: int
    created_at: datetime
    pool_version: int
    fit_stamp: datetime | None


@dataclass(frozen=True)
class StoredFit:
    blob: bytes
    summary: dict[str, Any]
    stamp: datetime  # when it was saved: a new fit has a new stamp


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    task_name: str | None
    status: str
    progress: float
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class BatchRecord:
    job_id: str
    task_id: int
    options: dict[str, Any]
    total: int
    done: int
    errors: int
    runs: list[dict[str, Any]]


@dataclass(frozen=True)
class BatchItem:
    position: int
    client_id: str | None
    input: Any
    outcome: dict[str, Any] | None


def _batch_record(row: BatchRow) -> BatchRecord:
    return BatchRecord(row.job_id, row.task_id, dict(row.options), row.total, row.done, row.errors, list(row.runs))


def _job_record(row: Any) -> JobRecord:
    """A job row as the store hands it out."""
    return JobRecord(row.id, row.kind, row.task_name, row.status, row.progress, row.result, row.error,
                     row.created_at, row.updated_at)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Synchronous repository; the HTTP layer calls it from worker threads."""

    def __init__(self, url: str, upgrade: bool = True) -> None:
        """Open the database at ``url``, bringing its schema to this code's revision (``upgrade`` off: raise
        ``schema.SchemaBehindError`` unless it is there already)."""
        self.engine = make_engine(url)
        ensure_schema(self.engine, upgrade)
        try:  # a database made before the index, or whose two unfinished fits of a task refused it: add it
            ONE_UNFINISHED_JOB.create(self.engine, checkfirst=True)
        except DBAPIError:  # it holds two unfinished fits of a task already: the heartbeat fails them
            logger.warning("the one-fit-per-task index could not be created yet; a later start will add it")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- tasks -------------------------------------------------------------------------------------------

    def _record(self, session: Session, row: TaskRow) -> TaskRecord:
        n_examples, n_labeled = session.execute(
            select(func.count(ExampleRow.row_id), func.count(ExampleRow.label)).where(ExampleRow.task_id == row.id)
        ).one()
        return TaskRecord(
            id=row.id, name=row.name, labels=list(row.labels), verbalizers=dict(row.verbalizers),
            template=row.template, instruction=row.instruction, separator=row.separator, default_k=row.default_k,
            pool_version=row.pool_version, created_at=row.created_at, n_examples=int(n_examples),
            n_labeled=int(n_labeled),
        )

    def create_task(
        self, name: str, labels: list[str], verbalizers: dict[str, str], template: str,
        instruction: str | None, separator: str, default_k: int | None,
    ) -> TaskRecord:
        try:
            with self._transaction() as session:
                row = TaskRow(name=name, labels=labels, verbalizers=verbalizers, template=template,
                              instruction=instruction, separator=separator, default_k=default_k,
                              pool_version=0, created_at=_now())
                session.add(row)
                session.flush()
                return self._record(session, row)
        except IntegrityError as exc:
            raise NameTakenError(name) from exc

    def get_task(self, name: str) -> TaskRecord | None:
        with self._sessions() as session:
            row = session.scalar(select(TaskRow).where(TaskRow.name == name))
            return self._record(session, row) if row else None

    def list_tasks(self) -> list[TaskRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(TaskRow).order_by(TaskRow.id)).all()
            return [self._record(session, row) for row in rows]

    def delete_task(self, name: str) -> list[str] | None:
        """Delete the task, its examples and its fit; its unfinished jobs fail. The ids of those jobs (None when
        there is no such task): whoever runs them stops."""
        with self._transaction() as session:
            row = session.scalar(select(TaskRow).where(TaskRow.name == name))
            if row is None:
                return None
            session.execute(delete(ExampleRow).where(ExampleRow.task_id == row.id))
            session.execute(delete(FitRow).where(FitRow.task_id == row.id))
            # Its unfinished batch jobs stop at their next chunk; what they classified stays readable. Its fit
            # and annotation jobs stop too: a task created again under its name must not wait behind them.
            unfinished = or_(JobRow.id.in_(select(BatchRow.job_id).where(BatchRow.task_id == row.id)),
                             and_(JobRow.task_name == name, JobRow.kind != BATCH_JOB))
            stopped = list(session.scalars(select(JobRow.id).where(unfinished, JobRow.status.in_(UNFINISHED))))
            if stopped:
                session.execute(update(JobRow).where(JobRow.id.in_(stopped)).values(
                    status="failed", updated_at=_now(),
                    error={"message": f"task '{name}' was deleted", "type": "task_deleted"}))
            session.delete(row)
            return stopped

    # --- examples ----------------------------------------------------------------------------------------

    def add_examples(self, task_id: int, examples: Sequence[NewExample]) -> tuple[int, int, int]:
        """Add a batch atomically. Returns (added, n_examples, n_labeled)."""
        given = [e.id for e in examples if e.id is not None]
        seen: dict[str, int] = {}
        for index, example in enumerate(examples):
            if example.id is not None:
                if example.id in seen:
                    raise DuplicateExampleIdError(example.id, index)
                seen[example.id] = index
        try:
            with self._transaction() as session:
                if given:
                    taken = session.scalars(
                        select(ExampleRow.example_id).where(
                            ExampleRow.task_id == task_id, ExampleRow.example_id.in_(given)
                        )
                    ).first()
                    if taken is not None:
                        raise DuplicateExampleIdError(taken, seen[taken])
                now = _now()
                version = self._bump_pool_version(session, task_id)
                session.add_all(
                    ExampleRow(
                        task_id=task_id, example_id=e.id or f"ex-{uuid.uuid4().hex[:16]}", input=e.input,
                        label=e.label, embedding=np.asarray(e.embedding, dtype=np.float32).tobytes(),
                        created_at=now, changed_version=version,
                    )
                    for e in examples
                )
                session.flush()
                n_examples, n_labeled = session.execute(
                    select(func.count(ExampleRow.row_id), func.count(ExampleRow.label))
                    .where(ExampleRow.task_id == task_id)
                ).one()
                failpoints.reach("upload-commit")
                return len(examples), int(n_examples), int(n_labeled)
        except IntegrityError as exc:  # a concurrent request took one of the ids first
            raise DuplicateExampleIdError("?", None) from exc

    def list_examples(
        self, task_id: int, labeled: bool | None, limit: int, offset: int
    ) -> tuple[list[ExampleRecord], int]:
        condition = [ExampleRow.task_id == task_id]
        if labeled is True:
            condition.append(ExampleRow.label.is_not(None))
        elif labeled is False:
            condition.append(ExampleRow.label.is_(None))
        with self._sessions() as session:
            total = session.scalar(select(func.count(ExampleRow.row_id)).where(*condition)) or 0
            rows = session.execute(
                select(ExampleRow.example_id, ExampleRow.input, ExampleRow.label)
                .where(*condition).order_by(ExampleRow.row_id).limit(limit).offset(offset)
            ).all()
        return [ExampleRecord(id=r[0], input=r[1], label=r[2]) for r in rows], int(total)

    def set_label(self, task_id: int, example_id: str, label: str | None) -> ExampleRecord | None:
        with self._transaction() as session:
            row = session.scalar(
                select(ExampleRow).where(ExampleRow.task_id == task_id, ExampleRow.example_id == example_id)
            )
            if row is None:
                return None
            row.label = label
            row.changed_version = self._bump_pool_version(session, task_id)
            return ExampleRecord(id=row.example_id, input=row.input, label=row.label)

    @staticmethod
    def _bump_pool_version(session: Session, task_id: int) -> int:
        """The task's next pool version, for the rows this transaction changes. The update locks the task's
        row until commit (PostgreSQL; SQLite writes one at a time anyway), so concurrent writers of a task
        commit in version order and rows added later get larger row ids."""
        session.execute(update(TaskRow).where(TaskRow.id == task_id).values(pool_version=TaskRow.pool_version + 1))
        return int(session.scalar(select(TaskRow.pool_version).where(TaskRow.id == task_id)) or 0)

    def load_pool(self, task_id: int) -> PoolRows:
        with self._sessions() as session:
            # The version first: rows may be newer than it (no snapshot on SQLite), never older, so a cache that
            # later reads the changes after this version sees again whatever came in between.
            version = session.scalar(select(TaskRow.pool_version).where(TaskRow.id == task_id)) or 0
            return self._pool_rows(session, int(version), ExampleRow.task_id == task_id)

    def load_pool_changes(self, task_id: int, since: int, max_rows: int) -> PoolChanges | None:
        """The task's rows added or relabeled after pool version ``since``, and its counts; None when more than
        ``max_rows`` changed (reading the whole pool is then as cheap)."""
        changed = and_(ExampleRow.task_id == task_id, ExampleRow.changed_version > since)
        with self._sessions() as session:
            version = session.scalar(select(TaskRow.pool_version).where(TaskRow.id == task_id)) or 0
            if (session.scalar(select(func.count(ExampleRow.row_id)).where(changed)) or 0) > max_rows:
                return None
            rows = self._pool_rows(session, int(version), changed)
            # Counted from the task's index alone: counting labels would read every row of a large pool.
            n_examples = session.scalar(select(func.count(ExampleRow.row_id)).where(ExampleRow.task_id == task_id))
        return PoolChanges(rows=rows, n_examples=int(n_examples or 0))

    @staticmethod
    def _pool_rows(session: Session, version: int, condition: Any) -> PoolRows:
        rows = session.execute(
            select(ExampleRow.row_id, ExampleRow.example_id, ExampleRow.input, ExampleRow.label, ExampleRow.embedding)
            .where(condition).order_by(ExampleRow.row_id)
        ).all()
        embeddings = (np.stack([np.frombuffer(r[4], dtype=np.float32) for r in rows])
                      if rows else np.zeros((0, 0), dtype=np.float32))
        return PoolRows(pool_version=version, ids=[r[1] for r in rows], inputs=[r[2] for r in rows],
                        labels=[r[3] for r in rows], embeddings=embeddings, row_ids=[int(r[0]) for r in rows])

    def task_versions(self, name: str) -> TaskVersions | None:
        """One cheap read per request: whether the task exists and which pool and fit it has now."""
        with self._sessions() as session:
            row = session.execute(
                select(TaskRow.id, TaskRow.created_at, TaskRow.pool_version, FitRow.created_at)
                .outerjoin(FitRow, FitRow.task_id == TaskRow.id).where(TaskRow.name == name)
            ).first()
        if row is None:
            return None
        return TaskVersions(task_id=row[0], created_at=row[1], pool_version=int(row[2]), fit_stamp=row[3])

    # --- fits (cascade, meta-controller, calibration) -----------------------------------------------------

    def save_fit(self, task_id: int, blob: bytes, summary: dict[str, Any], stamp: datetime | None = None,
                 task_created_at: datetime | None = None) -> bool:
        """Replace the task's fit in one transaction (the previous one stays until this commits);
        ``stamp``: when it was saved (default now), which identifies the fit. With ``task_created_at``, only
        while the task is the one created then (SQLite gives a task created again a deleted one's id): whether
        it was saved."""
        with self._transaction() as session:
            if task_created_at is not None:
                created = session.scalar(select(TaskRow.created_at).where(TaskRow.id == task_id).with_for_update())
                if created is None or as_utc(created) != as_utc(task_created_at):
                    return False
            session.execute(delete(FitRow).where(FitRow.task_id == task_id))
            session.add(FitRow(task_id=task_id, blob=blob, summary=summary, created_at=stamp or _now()))
            return True

    # --- the embedder --------------------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        with self._sessions() as session:
            return session.scalar(select(SettingRow.value).where(SettingRow.key == key))

    def put_setting(self, key: str, value: str) -> None:
        try:
            with self._transaction() as session:
                session.merge(SettingRow(key=key, value=value))
        except IntegrityError:  # another replica inserted it between merge's read and its insert
            with self._transaction() as session:
                session.execute(update(SettingRow).where(SettingRow.key == key).values(value=value))

    def example_inputs(self, task_id: int) -> list[tuple[int, dict[str, Any]]]:
        """Every example's row id and input, in row order."""
        with self._sessions() as session:
            rows = session.execute(select(ExampleRow.row_id, ExampleRow.input).where(ExampleRow.task_id == task_id)
                                   .order_by(ExampleRow.row_id)).all()
        return [(int(r[0]), r[1]) for r in rows]

    def replace_embeddings(self, task_id: int, embeddings: dict[int, np.ndarray]) -> None:
        """New embeddings of these rows (by row id), in one transaction that moves the task's pool version, so
        that every cached pool reloads them."""
        with self._transaction() as session:
            version = self._bump_pool_version(session, task_id)
            for row_id, vector in embeddings.items():
                session.execute(update(ExampleRow).where(ExampleRow.row_id == row_id).values(
                    embedding=np.asarray(vector, dtype=np.float32).tobytes(), changed_version=version))

    def mark_fits_embedder(self, identity: str) -> int:
        """Record ``identity`` as the embedder of every stored fit that does not name one (fits made before
        fits recorded it); how many."""
        marked = 0
        with self._transaction() as session:
            for row in session.scalars(select(FitRow)):
                metadata = dict(row.summary.get("metadata") or {})
                if "embedder" not in metadata:
                    row.summary = {**row.summary, "metadata": {**metadata, "embedder": identity}}
                    marked += 1
        return marked

    def fit_summary_and_stamp(self, task_id: int) -> tuple[dict[str, Any], datetime] | None:
        """The fit's summary and its stamp (when it was saved), without its pickled blob."""
        with self._sessions() as session:
            row = session.execute(select(FitRow.summary, FitRow.created_at)
                                  .where(FitRow.task_id == task_id)).first()
            return (row[0], row[1]) if row else None

    def load_fit(self, task_id: int) -> StoredFit | None:
        with self._sessions() as session:
            row = session.get(FitRow, task_id)
            return StoredFit(row.blob, row.summary, row.created_at) if row else None

    def delete_fit(self, task_id: int) -> bool:
        with self._transaction() as session:
            return session.execute(delete(FitRow).where(FitRow.task_id == task_id)).rowcount > 0

    # --- jobs --------------------------------------------------------------------------------------------

    def create_job(self, kind: str, task_name: str | None) -> JobRecord:
        job_id = f"job-{uuid.uuid4().hex}"
        now = _now()
        try:
            with self._transaction() as session:
                session.add(JobRow(id=job_id, kind=kind, task_name=task_name, status="queued", progress=0.0,
                                   created_at=now, updated_at=now))
        except IntegrityError as exc:
            raise JobRunningError(kind, task_name) from exc
        return JobRecord(job_id, kind, task_name, "queued", 0.0, None, None, now, now)

    def update_job(self, job_id: str, **values: Any) -> None:
        """Update a job that has not ended: once failed (say, as stale by another replica, which may then
        have started its successor) or succeeded, a late report leaves it as it is."""
        with self._transaction() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(UNFINISHED))
                            .values(updated_at=_now(), **values))

    def update_progress(self, job_id: str, progress: float) -> None:
        """Progress of a running job only: a late report must not touch a finished one."""
        with self._transaction() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(progress=progress, updated_at=_now()))

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return None
            return _job_record(row)

    def list_jobs(self, task_name: str | None = None, kind: str | None = None, status: str | None = None,
                  limit: int = 20, offset: int = 0) -> tuple[list[JobRecord], int]:
        """A page of jobs, newest first, with how many match the filters in all."""
        conditions = [column == value for column, value in ((JobRow.task_name, task_name), (JobRow.kind, kind),
                                                            (JobRow.status, status)) if value is not None]
        with self._sessions() as session:
            total = session.scalar(select(func.count(JobRow.id)).where(*conditions))
            rows = session.scalars(select(JobRow).where(*conditions)
                                   .order_by(JobRow.created_at.desc(), JobRow.id.desc())
                                   .offset(offset).limit(limit)).all()
            return [_job_record(row) for row in rows], int(total or 0)

    def unfinished_job(self, kind: str, task_name: str) -> JobRecord | None:
        """The latest queued or running job of this kind for the task, if any."""
        with self._sessions() as session:
            row = session.scalar(
                select(JobRow).where(JobRow.kind == kind, JobRow.task_name == task_name,
                                     JobRow.status.in_(UNFINISHED))
                .order_by(JobRow.created_at.desc()).limit(1))
            if row is None:
                return None
            return _job_record(row)

    def touch_jobs(self, job_ids: list[str]) -> None:
        """Heartbeat of the jobs this process runs: their ``updated_at`` says they are alive."""
        if not job_ids:
            return
        with self._transaction() as session:
            session.execute(update(JobRow).where(JobRow.id.in_(job_ids), JobRow.status.in_(UNFINISHED))
                            .values(updated_at=_now()))

    def fail_stale_jobs(self, stale_after: timedelta, reason: str) -> int:
        """Unfinished jobs whose runner has not been heard of for ``stale_after`` died with their process
        (any replica's): say so. Jobs other live replicas run keep beating and are left alone. Batch jobs are
        not failed: ``claim_batches`` resumes them."""
        cutoff = _now() - stale_after
        with self._transaction() as session:
            result = session.execute(
                update(JobRow).where(JobRow.status.in_(UNFINISHED), JobRow.updated_at < cutoff,
                                     JobRow.kind != BATCH_JOB)
                .values(status="failed", error={"message": reason, "type": "job_interrupted"}, updated_at=_now())
            )
            return int(result.rowcount or 0)

    # --- batch jobs --------------------------------------------------------------------------------------

    def create_batch(self, task_name: str, task_id: int, options: dict[str, Any], owner: str,
                     items: Sequence[tuple[str | None, Any, dict[str, Any] | None]]) -> JobRecord:
        """A batch job with its inputs, in one transaction: each item is (client id, input, outcome), the
        outcome given already for a line that cannot be classified."""
        job_id = f"job-{uuid.uuid4().hex}"
        errors = sum(outcome is not None for _, _, outcome in items)
        progress = errors / len(items) if items else 0.0
        now = _now()
        with self._transaction() as session:
            session.add(JobRow(id=job_id, kind=BATCH_JOB, task_name=task_name, status="queued",
                               progress=progress, created_at=now, updated_at=now))
            session.flush()  # the job row before the rows that refer to it
            session.add(BatchRow(job_id=job_id, task_id=task_id, options=options, total=len(items), done=errors,
                                 errors=errors, runs=[], owner=owner))
            session.flush()
            session.execute(insert(BatchItemRow), [
                {"job_id": job_id, "position": position, "client_id": client_id, "input": value, "outcome": outcome}
                for position, (client_id, value, outcome) in enumerate(items)])
        return JobRecord(job_id, BATCH_JOB, task_name, "queued", progress, None, None, now, now)

    def get_batch(self, job_id: str) -> BatchRecord | None:
        with self._sessions() as session:
            row = session.get(BatchRow, job_id)
            return _batch_record(row) if row else None

    def batch_items(self, job_id: str, offset: int, limit: int, pending_only: bool = False) -> list[BatchItem]:
        """Items in input order from ``offset`` (a position); with ``pending_only``, those not classified yet."""
        condition = [BatchItemRow.job_id == job_id, BatchItemRow.position >= offset]
        if pending_only:
            condition.append(BatchItemRow.outcome.is_(None))
        with self._sessions() as session:
            rows = session.execute(
                select(BatchItemRow.position, BatchItemRow.client_id, BatchItemRow.input, BatchItemRow.outcome)
                .where(*condition).order_by(BatchItemRow.position).limit(limit)).all()
        return [BatchItem(r[0], r[1], r[2], r[3]) for r in rows]

    def save_batch_outcomes(self, job_id: str, outcomes: dict[int, dict[str, Any]]) -> BatchRecord | None:
        """Store classified items' outcomes and the job's progress, in one transaction. Items that have one
        already keep it, so a chunk stored twice (a resumed job's) counts once. None: the job was deleted
        (cancelled, then deleted while its last chunk was scored)."""
        with self._transaction() as session:
            saved = errors = 0
            for position, outcome in outcomes.items():
                result = session.execute(
                    update(BatchItemRow).where(BatchItemRow.job_id == job_id, BatchItemRow.position == position,
                                               BatchItemRow.outcome.is_(None)).values(outcome=outcome))
                if result.rowcount:
                    saved += 1
                    errors += "error" in outcome
            session.execute(update(BatchRow).where(BatchRow.job_id == job_id)
                            .values(done=BatchRow.done + saved, errors=BatchRow.errors + errors))
            row = session.get(BatchRow, job_id)
            if row is None:
                return None
            session.refresh(row)
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(progress=row.done / row.total if row.total else 1.0, updated_at=_now()))
            return _batch_record(row)

    def record_batch_run(self, job_id: str, run: dict[str, Any]) -> None:
        """What a start or a resumption of the job classifies with (pool version, fit)."""
        with self._transaction() as session:
            row = session.scalar(select(BatchRow).where(BatchRow.job_id == job_id).with_for_update())
            if row is not None:
                row.runs = [*row.runs, run]

    def cancel_job(self, job_id: str) -> tuple[bool, JobRecord | None]:
        """Mark an unfinished job cancelled (whoever runs it stops at its next check): whether this call did,
        and the job as it is now."""
        with self._transaction() as session:
            changed = session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(UNFINISHED))
                                      .values(status="cancelled", updated_at=_now())).rowcount
            row = session.get(JobRow, job_id)
            return bool(changed), _job_record(row) if row else None

    def delete_job(self, job_id: str) -> bool:
        """Delete a finished job and, for a batch job, its inputs and results: whether there was one. Raises
        JobUnfinishedError for a queued or running job. The items go a chunk per transaction, then the job in
        one (a reader meanwhile may see fewer results, never a job without its row)."""
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return False
            if row.status in UNFINISHED:
                raise JobUnfinishedError(row.status)
        self._delete_items(job_id)
        # A finished job never runs again, so nothing adds items now; another replica deleting it at once may
        # have taken the job row already.
        with self._transaction() as session:
            session.execute(delete(BatchRow).where(BatchRow.job_id == job_id))
            return bool(session.execute(delete(JobRow).where(JobRow.id == job_id)).rowcount)

    def _delete_items(self, job_id: str) -> None:
        """A chunk per transaction until none is left (another replica deleting the same job at once takes
        some chunks: this one goes on with what is left, never all of it in one transaction)."""
        while True:
            with self._transaction() as session:
                positions = select(BatchItemRow.position).where(BatchItemRow.job_id == job_id).order_by(
                    BatchItemRow.position).limit(DELETE_CHUNK).scalar_subquery()
                deleted = session.execute(delete(BatchItemRow).where(BatchItemRow.job_id == job_id,
                                                                     BatchItemRow.position.in_(positions))).rowcount
                if not deleted and session.scalar(
                        select(BatchItemRow.position).where(BatchItemRow.job_id == job_id).limit(1)) is None:
                    return

    def finished_jobs_before(self, cutoff: datetime, limit: int = 100) -> list[str]:
        """Ids of jobs that ended (succeeded, failed, cancelled) and were last updated before ``cutoff``, oldest
        first: what retention deletes."""
        with self._sessions() as session:
            return list(session.scalars(select(JobRow.id).where(JobRow.status.not_in(UNFINISHED),
                                                                JobRow.updated_at < cutoff)
                                        .order_by(JobRow.updated_at).limit(limit)))

    def batch_state(self, job_id: str) -> tuple[str, str | None] | None:
        """A batch job's status and the process that runs it: a runner stops when either says it should."""
        with self._sessions() as session:
            row = session.execute(select(JobRow.status, BatchRow.owner).join(BatchRow, BatchRow.job_id == JobRow.id)
                                  .where(JobRow.id == job_id)).first()
            return (row[0], row[1]) if row else None

    def claim_batches(self, owner: str, stale_after: timedelta) -> list[str]:
        """Take over unfinished batch jobs nobody runs: released by a service that stopped, or whose runner
        has not been heard of for ``stale_after`` (it died). Each claim is one compare-and-set UPDATE on the
        owner read before, so that of several processes trying at once one wins; a runner that loses its job
        anyway (it beat just too late) sees another owner at its next chunk and stops."""
        cutoff = _now() - stale_after
        with self._sessions() as session:
            candidates = session.execute(
                select(BatchRow.job_id, BatchRow.owner).join(JobRow, JobRow.id == BatchRow.job_id)
                .where(JobRow.status.in_(UNFINISHED), or_(BatchRow.owner.is_(None), JobRow.updated_at < cutoff))
                .order_by(JobRow.created_at)).all()
        claimed = []
        for job_id, seen in candidates:
            still = select(JobRow.id).where(JobRow.id == job_id, JobRow.status.in_(UNFINISHED),
                                            *([] if seen is None else [JobRow.updated_at < cutoff]))
            same_owner = BatchRow.owner.is_(None) if seen is None else BatchRow.owner == seen
            with self._transaction() as session:
                if session.execute(update(BatchRow).where(BatchRow.job_id == job_id, same_owner,
                                                          BatchRow.job_id.in_(still)).values(owner=owner)).rowcount:
                    session.execute(update(JobRow).where(JobRow.id == job_id).values(updated_at=_now()))
                    claimed.append(job_id)
        return claimed

    def release_batches(self, owner: str, job_id: str | None = None) -> None:
        """This process stops running the job (every job of its, without ``job_id``) without finishing it: it
        goes back to queued, and another start resumes it at once."""
        mine = [BatchRow.owner == owner, *([BatchRow.job_id == job_id] if job_id else [])]
        with self._transaction() as session:
            session.execute(update(JobRow).where(JobRow.id.in_(select(BatchRow.job_id).where(*mine)),
                                                 JobRow.status == "running")
                            .values(status="queued", updated_at=_now()))
            session.execute(update(BatchRow).where(*mine).values(owner=None))
