"""The store's schema version: Alembic revisions in ``service/migrations``, applied at start.

A database made before migrations existed (no ``alembic_version`` table, the service's tables present) is
brought to revision 0001's shape, the columns and indexes older versions added by hand included, and stamped
0001; then every later revision runs. Replicas starting together on PostgreSQL take turns under an advisory
lock; two processes upgrading one SQLite file at once, the loser finds the database upgraded and goes on."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from service.migrations.schema_0001 import schema as schema_0001

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
FIRST = "0001"
_LOCK_KEY = 0x1C15E4E  # pg_advisory_xact_lock's key: any constant the service alone uses
ONE_FIT_INDEX = "one_unfinished_exclusive_job"


class SchemaBehindError(RuntimeError):
    """The database is at an older revision than this service's, and upgrading at start is off."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(connection: Connection) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine, upgrade: bool = True) -> None:
    """Bring the database to ``head()``; with ``upgrade`` off, raise SchemaBehindError unless it is there."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugin set-up at INFO, every start; ours says more
    newest = head()
    with engine.connect() as connection:
        at = current(connection)
        if at == newest:
            return
        at = at or ("none (made before migrations)" if _made_before_migrations(connection) else "none (empty)")
    if not upgrade:
        raise SchemaBehindError(
            f"the database is at schema revision {at}; this service needs {newest}. Upgrade it with "
            f"`python -m service.cli upgrade-db` (or start with ICL_DB_UPGRADE=1, the default), after a backup")
    try:
        _upgrade(engine, newest)
    except DBAPIError:
        with engine.connect() as connection:  # another process upgraded it meanwhile (two on one SQLite file)
            if current(connection) != newest:
                raise
        logger.info("schema: upgraded to %s by another process meanwhile", newest)


def _upgrade(engine: Engine, newest: str) -> None:
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # one replica upgrades; the others then find it done
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        before = current(connection)
        if before is None and _made_before_migrations(connection):
            _bring_to_first(connection)
            command.stamp(_config(connection), FIRST)
            logger.info("schema: a database made before migrations, stamped %s", FIRST)
        command.upgrade(_config(connection), "head")
        logger.info("schema: upgraded from %s to %s", before or "none", newest)


def _made_before_migrations(connection: Connection) -> bool:
    return "tasks" in inspect(connection).get_table_names()


def _bring_to_first(connection: Connection) -> None:
    """What the service did by hand at start before migrations: create the tables a database lacks (with their
    indexes), add the examples' ``changed_version`` column and the indexes older databases lack. The
    one-fit-per-task index is left to the store, which tries it at every start: a database holding two
    unfinished fits of one task cannot take it until the heartbeat has failed them."""
    metadata = schema_0001()
    metadata.create_all(connection, checkfirst=True)
    if "changed_version" not in {c["name"] for c in inspect(connection).get_columns("examples")}:
        connection.execute(text("ALTER TABLE examples ADD COLUMN changed_version INTEGER NOT NULL DEFAULT 0"))
    for table in metadata.sorted_tables:
        for index in table.indexes:
            if index.name != ONE_FIT_INDEX:
                index.create(connection, checkfirst=True)
