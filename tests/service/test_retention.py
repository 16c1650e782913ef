"""Retention: old finished jobs go with their batch rows, from the heartbeat; a database that keeps taking
batch jobs stays the same size."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from service.retention import JobRetention
from service.store import Store


def _file_bytes(store: Store) -> int:
    """The SQLite database's size on disk: every page, free ones included (deleted rows free pages that later
    rows reuse; nothing here shrinks the file)."""
    with store.engine.connect() as connection:
        pages = connection.execute(text("PRAGMA page_count")).scalar()
        size = connection.execute(text("PRAGMA page_size")).scalar()
    return int(pages * size)


def _batch_jobs(store: Store, jobs: int, items: int) -> list[str]:
    ids = []
    for _ in range(jobs):
        job = store.create_batch("t", 1, {"calibration": "auto"}, "me",
                                 [(f"id-{i}", {"text": f"some input text number {i}"}, None) for i in range(items)])
        store.save_batch_outcomes(job.id, {i: {"prediction": {"label": "a", "probs": {"a": 0.9, "b": 0.1}}}
                                           for i in range(items)})
        store.update_job(job.id, status="succeeded")
        ids.append(job.id)
    return ids


def test_old_finished_jobs_are_deleted_unfinished_ones_and_new_ones_kept(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    old = _batch_jobs(store, 3, 5)
    running = store.create_job("controller", "t")
    store.update_job(running.id, status="running")
    retention = JobRetention(store, days=0.0, every_s=3600)  # everything finished is old
    assert asyncio.run(retention.sweep()) == 3
    assert all(store.get_job(job) is None for job in old) and store.get_job(running.id).status == "running"
    new = _batch_jobs(store, 1, 5)
    assert asyncio.run(retention.sweep()) == 0  # at most once per every_s
    assert store.get_job(new[0]) is not None
    assert JobRetention(store, days=1.0).delete_old() == (0, False)  # a day's retention keeps a job of now
    store.close()


def test_a_backlog_goes_a_few_jobs_per_beat_so_that_the_heartbeat_keeps_beating(tmp_path: Path, monkeypatch):
    from service import retention as retention_module

    monkeypatch.setattr(retention_module, "PER_SWEEP", 2)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    _batch_jobs(store, 5, 3)
    retention = JobRetention(store, days=0.0, every_s=3600)
    # Each beat deletes two; while some are left the next beat goes on at once, then it waits every_s again.
    assert [asyncio.run(retention.sweep()) for _ in range(5)] == [2, 2, 1, 0, 0]
    _batch_jobs(store, 1, 3)
    assert asyncio.run(retention.sweep()) == 0 and store.list_jobs()[1] == 1
    store.close()


def test_the_service_sweeps_from_its_heartbeat_unless_retention_is_off(tmp_path: Path):
    import time

    from tests.service.support import make_client

    with make_client(tmp_path / "on", job_heartbeat_s=0.05, job_retention_days=1e-9,
                     job_retention_sweep_s=0.05) as client:
        store = client.app.state.icl.store
        job = _batch_jobs(store, 1, 3)[0]
        deadline = time.monotonic() + 10
        while store.get_job(job) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get_job(job) is None
    with make_client(tmp_path / "off", job_heartbeat_s=0.05, job_retention_days=0) as client:
        store = client.app.state.icl.store
        job = _batch_jobs(store, 1, 3)[0]
        time.sleep(0.5)  # ten beats
        assert store.get_job(job) is not None


def test_a_database_that_keeps_taking_batch_jobs_stays_bounded_under_retention(tmp_path: Path):
    kept = Store(f"sqlite:///{tmp_path / 'kept.db'}")
    swept = Store(f"sqlite:///{tmp_path / 'swept.db'}")
    retention = JobRetention(swept, days=0.0, every_s=0.0)
    sizes = []
    for _ in range(12):  # twelve "days" of five batch jobs of 200 inputs each, each swept at the day's end
        _batch_jobs(kept, 5, 200)
        _batch_jobs(swept, 5, 200)
        asyncio.run(retention.sweep())
        sizes.append(_file_bytes(swept))
    # Without retention the file grows with every day; with it, it stays the size of one day's jobs.
    assert _file_bytes(kept) > 8 * sizes[0]
    assert max(sizes) <= 1.25 * sizes[0], sizes
    kept.close()
    swept.close()
