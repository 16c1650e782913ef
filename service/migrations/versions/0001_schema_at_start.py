"""The store's schema as it stood when migrations began.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

from service.migrations.schema_0001 import schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema().create_all(op.get_bind())


def downgrade() -> None:
    schema().drop_all(op.get_bind())
