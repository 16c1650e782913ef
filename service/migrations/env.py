"""Alembic's environment: migrations run on the connection ``service/schema.py`` hands over (one
transaction, under the upgrade lock), never on a URL of their own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters a table by copying it
with context.begin_transaction():
    context.run_migrations()
