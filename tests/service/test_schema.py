"""Schema migrations: a new database is made by the revisions and matches the models; a database made by the
code of revision 0001, before migrations existed (``tests/data/schema``), is upgraded with every row found;
a service told not to upgrade refuses to start on it, saying how to; replicas starting together upgrade once.

The fixtures were made by the store at the commit before migrations (Store API calls: two tasks, 18
examples, a label changed, a fit, a setting, a fit job, a failed annotation job, a cancelled batch job with
three items and a run); the PostgreSQL one is that database's ``pg_dump --inserts``."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from service.schema import SchemaBehindError, head
from service.store import Base, Store
from tests.service.support import empty_postgres

FIXTURES = Path(__file__).parents[1] / "data" / "schema"
TABLES_0001 = ["tasks", "examples", "controllers", "service_settings", "jobs", "batches", "batch_items"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else empty_postgres()


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request, tmp_path) -> str:
    """A database as the code of revision 0001 left it, made before migrations."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copy(FIXTURES / "store-0001.sqlite", path)
        return f"sqlite:///{path}"
    url = empty_postgres()
    engine = create_engine(url)
    raw = engine.raw_connection()  # the dump sets search_path for its session: a connection of its own
    try:
        with raw.cursor() as cursor:
            cursor.execute((FIXTURES / "store-0001.postgresql.sql").read_text())
        raw.commit()
    finally:
        raw.close()
    engine.dispose()
    return url


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        found = {table: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {table}")).all()), key=repr)
                 for table in TABLES_0001}
    engine.dispose()
    return found


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


def test_a_new_database_is_made_by_the_revisions_and_matches_the_models(url):
    store = Store(url)
    with store.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
        # A model changed without a revision shows here: every schema change must be a revision.
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    store.close()


def test_a_database_made_before_migrations_is_upgraded_and_every_row_found(old_database):
    before = _rows(old_database)
    assert sum(map(len, before.values())) == 2 + 18 + 1 + 1 + 3 + 1 + 3
    assert _revision(old_database) is None
    store = Store(old_database)
    assert _revision(old_database) == head()
    assert _rows(old_database) == before
    # And the store reads it all back.
    assert [t.name for t in store.list_tasks()] == ["reviews", "pairs"]
    reviews = store.get_task("reviews")
    assert (reviews.n_examples, reviews.n_labeled, reviews.default_k) == (12, 9, 4)
    assert store.load_pool(reviews.id).ids[:3] == ["r0", "r1", "r2"]
    assert store.load_fit(reviews.id).blob == b"\x80\x04fit-blob" and store.setting("embedder")
    jobs, total = store.list_jobs()
    assert total == 3 and {j.status for j in jobs} == {"succeeded", "failed", "cancelled"}
    batch = next(j for j in jobs if j.kind == "batch")
    assert store.get_batch(batch.id).runs == [{"pool_version": 2, "fit": "fit-x"}]
    assert [item.outcome is not None for item in store.batch_items(batch.id, 0, 10)] == [True, False, True]
    store.close()
    Store(old_database).close()  # a second start finds it at the newest revision
    assert _rows(old_database) == before


def test_told_not_to_upgrade_a_service_refuses_an_old_database_and_leaves_it_alone(old_database):
    before = _rows(old_database)
    with pytest.raises(SchemaBehindError, match="upgrade-db"):
        Store(old_database, upgrade=False)
    assert _revision(old_database) is None and _rows(old_database) == before
    Store(old_database).close()
    Store(old_database, upgrade=False).close()  # at the newest revision: it starts


def test_replicas_starting_together_on_one_postgresql_upgrade_it_once():
    url = empty_postgres()
    failures: list[BaseException] = []

    def start() -> None:
        try:
            Store(url).close()
        except BaseException as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert _revision(url) == head()
    engine = create_engine(url)
    assert set(TABLES_0001) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_a_service_told_not_to_upgrade_does_not_start_on_an_old_database(tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings
    from service.state import Runtime
    from tests.fakes import FakeEmbedder, FakeScorer

    shutil.copy(FIXTURES / "store-0001.sqlite", tmp_path / "iclserve.db")
    app = create_app(Settings(data_dir=tmp_path, db_upgrade=False),
                     runtime=Runtime(scorer=FakeScorer(), embedder=FakeEmbedder()))
    with pytest.raises(SchemaBehindError, match=f"needs {head()}"), TestClient(app):
        pass
    with TestClient(create_app(Settings(data_dir=tmp_path),
                               runtime=Runtime(scorer=FakeScorer(), embedder=FakeEmbedder()))) as client:
        # (the fixture's fit is a stand-in blob and summary, which the migration keeps but the API cannot show)
        pairs = client.get("/v1/tasks/pairs").json()
        assert (pairs["n_examples"], pairs["n_labeled"]) == (6, 6)
