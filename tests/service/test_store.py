"""The store on SQLite and, when ICL_TEST_POSTGRES_URL is set (CI starts one), on PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.state import Runtime
from service.store import DuplicateExampleIdError, NameTakenError, NewExample, Store
from tests.fakes import FakeEmbedder, FakeScorer
from tests.service.support import empty_postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return empty_postgres()


def _example(example_id, label="a"):
    return NewExample(id=example_id, input={"text": f"text {example_id}"}, label=label,
                      embedding=np.arange(4, dtype=np.float32))


def test_store_roundtrip_and_atomic_batches(url):
    store = Store(url)
    task = store.create_task("t", ["a", "b"], {"a": "a", "b": "b"}, "X: {text}\nY: {label}", None, "\n\n", None)
    with pytest.raises(NameTakenError):
        store.create_task("t", ["a", "b"], {"a": "a", "b": "b"}, "X: {text}\nY: {label}", None, "\n\n", None)
    assert store.add_examples(task.id, [_example("1"), _example("2", None)]) == (2, 2, 1)
    with pytest.raises(DuplicateExampleIdError) as info:
        store.add_examples(task.id, [_example("3"), _example("1")])
    assert info.value.index == 1
    assert store.get_task("t").n_examples == 2  # the failed batch added nothing, not even "3"
    versions = store.task_versions("t")
    assert versions.task_id == task.id and versions.fit_stamp is None
    assert store.set_label(task.id, "2", "b").label == "b"
    assert store.task_versions("t").pool_version == versions.pool_version + 1
    store.save_fit(task.id, b"first", {"n": 1})
    stamp = store.task_versions("t").fit_stamp
    assert stamp is not None and store.load_fit(task.id).stamp == stamp
    store.save_fit(task.id, b"second", {"n": 2})
    assert store.task_versions("t").fit_stamp != stamp  # a new fit: cached views reload it
    assert store.load_fit(task.id).blob == b"second"
    assert store.task_versions("missing") is None
    pool = store.load_pool(task.id)
    assert pool.ids == ["1", "2"] and pool.labels == ["a", "b"]
    assert np.array_equal(pool.embeddings[0], np.arange(4, dtype=np.float32))
    rows, total = store.list_examples(task.id, labeled=True, limit=1, offset=1)
    assert total == 2 and rows[0].id == "2"
    assert store.delete_task("t") == [] and store.get_task("t") is None and store.delete_task("t") is None
    assert store.load_pool(task.id).ids == []
    store.close()


def test_service_state_survives_restart(url, tmp_path):
    settings = Settings(data_dir=tmp_path, database_url=url)

    def client():
        return TestClient(create_app(settings, runtime=Runtime(scorer=FakeScorer(), embedder=FakeEmbedder())))

    with client() as c:
        assert c.post("/v1/tasks", json={"name": "t", "labels": ["a", "b"], "template": "X: {text}\nY: {label}"}
                      ).status_code == 201
        c.post("/v1/tasks/t/examples", json={"examples": [{"id": "e1", "input": "x", "label": "a"}]})
    with client() as c:
        assert c.get("/v1/tasks/t").json()["n_labeled"] == 1
        assert c.get("/v1/tasks/t/examples").json()["examples"][0]["id"] == "e1"


def test_stale_jobs_are_failed_and_live_ones_kept(url):
    from datetime import timedelta

    store = Store(url)
    alive, dead = store.create_job("demo", None), store.create_job("demo", None)
    store.update_job(alive.id, status="running")
    store.touch_jobs([alive.id])
    assert store.fail_stale_jobs(timedelta(minutes=5), "died") == 0
    assert store.fail_stale_jobs(timedelta(0), "died") == 2  # nothing beats for them here
    assert store.get_job(dead.id).status == "failed" and store.get_job(alive.id).status == "failed"
    finished = store.create_job("demo", None)
    store.update_job(finished.id, status="succeeded", result={})
    assert store.fail_stale_jobs(timedelta(0), "died") == 0  # finished jobs are never touched
    assert store.get_job(finished.id).status == "succeeded"
    store.close()


def test_one_unfinished_fit_per_task_whoever_asks(url):
    from service.store import JobRunningError

    store, other_replica = Store(url), Store(url)
    first = store.create_job("controller", "t")
    with pytest.raises(JobRunningError):
        other_replica.create_job("controller", "t")  # the database refuses it, not a check that both passed
    other_replica.create_job("controller", "u")  # another task's fit may run
    store.create_job("annotation", "t")  # jobs of other kinds are not exclusive
    store.create_job("annotation", "t")
    store.update_job(first.id, status="failed")
    other_replica.create_job("controller", "t")  # once it has ended, a new fit may start
    store.close()
    other_replica.close()


def test_rows_record_the_pool_version_that_changed_them(url):
    store = Store(url)
    task = store.create_task("t", ["a", "b"], {"a": "a", "b": "b"}, "X: {text}\nY: {label}", None, "\n\n", None)
    store.add_examples(task.id, [_example("1"), _example("2", None)])
    first = store.task_versions("t").pool_version
    store.add_examples(task.id, [_example("3")])
    store.set_label(task.id, "2", "b")
    changes = store.load_pool_changes(task.id, first, max_rows=10)
    assert changes.rows.ids == ["2", "3"] and changes.rows.labels == ["b", "a"]  # row order, current labels
    assert changes.rows.pool_version == first + 2 and changes.n_examples == 3
    assert changes.rows.row_ids == sorted(changes.rows.row_ids)
    assert np.array_equal(changes.rows.embeddings[0], np.arange(4, dtype=np.float32))
    assert store.load_pool_changes(task.id, first, max_rows=1) is None  # too many: the caller reloads whole
    assert store.load_pool_changes(task.id, first + 2, max_rows=10).rows.ids == []
    assert store.load_pool(task.id).row_ids == sorted(store.load_pool(task.id).row_ids)
    store.close()


def test_a_database_made_before_row_versions_gets_them(url):
    from sqlalchemy import text

    store = Store(url)
    task = store.create_task("t", ["a", "b"], {"a": "a", "b": "b"}, "X: {text}\nY: {label}", None, "\n\n", None)
    store.add_examples(task.id, [_example("1")])
    with store.engine.begin() as connection:  # as the schema was before (and before migrations)
        connection.execute(text("DROP INDEX examples_task_changed"))
        connection.execute(text("ALTER TABLE examples DROP COLUMN changed_version"))
        connection.execute(text("DROP TABLE alembic_version"))
    store.close()
    store = Store(url)
    assert store.load_pool_changes(task.id, 0, max_rows=10).rows.ids == []  # stored rows are older than any cache
    store.add_examples(task.id, [_example("2")])
    assert store.load_pool_changes(task.id, 0, max_rows=10).rows.ids == ["2"]
    Store(url).close()  # a second start finds it there
    store.close()


def _finished_batch(store: Store, items: int, status: str = "succeeded") -> str:
    job = store.create_batch("t", 1, {}, "me", [(None, {"text": f"x{i}"}, None) for i in range(items)])
    store.save_batch_outcomes(job.id, {i: {"prediction": {"label": "a"}} for i in range(items)})
    store.update_job(job.id, status=status)
    return job.id


def test_a_finished_job_is_deleted_with_its_batch_rows_in_chunks(url, monkeypatch):
    from sqlalchemy import event, func, select

    from service import store as store_module
    from service.store import BatchItemRow, BatchRow, JobUnfinishedError

    monkeypatch.setattr(store_module, "DELETE_CHUNK", 3)  # ten items: four transactions, then the job
    store = Store(url)
    kept, gone = _finished_batch(store, 10), _finished_batch(store, 10, "cancelled")
    running = store.create_job("controller", "t")
    store.update_job(running.id, status="running")
    with pytest.raises(JobUnfinishedError):
        store.delete_job(running.id)
    statements: list[str] = []

    def record(_connection, _cursor, sql, *_rest) -> None:
        statements.append(sql)

    event.listen(store.engine, "before_cursor_execute", record)
    assert store.delete_job(gone) and store.get_job(gone) is None and store.get_batch(gone) is None
    event.remove(store.engine, "before_cursor_execute", record)
    chunks = [sql for sql in statements if sql.startswith("DELETE FROM batch_items") and " IN " in sql]
    assert len(chunks) == 5  # ten items three at a time, and the one that finds none left
    assert not store.delete_job(gone) and not store.delete_job("job-missing")
    with store.engine.connect() as connection:
        rows = connection.execute(select(BatchItemRow.job_id, func.count()).group_by(BatchItemRow.job_id)).all()
        batches = connection.execute(select(BatchRow.job_id)).scalars().all()
    assert dict(rows) == {kept: 10} and batches == [kept]  # the other job is untouched
    assert store.get_job(running.id).status == "running"
    # A cancelled job's last chunk stored after it was deleted stores nothing, and says so.
    assert store.save_batch_outcomes(gone, {0: {"prediction": {"label": "a"}}}) is None
    store.close()


def test_finished_jobs_before_a_time_are_listed_oldest_first(url):
    from datetime import UTC, datetime, timedelta

    store = Store(url)
    old, new = _finished_batch(store, 2), _finished_batch(store, 2, "failed")
    unfinished = store.create_job("controller", "t")
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert store.finished_jobs_before(later) == [old, new]
    assert store.finished_jobs_before(later, limit=1) == [old]
    assert store.finished_jobs_before(datetime.now(UTC) - timedelta(days=1)) == []
    assert unfinished.id not in store.finished_jobs_before(later)
    store.close()
