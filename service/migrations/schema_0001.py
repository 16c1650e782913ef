"""The store's schema as it stood when migrations began (revision 0001), frozen: the first revision creates
it, and a database made before migrations is brought to it (tables or columns it lacks added) and stamped.
Later changes are revisions of their own; this file never changes."""

from __future__ import annotations

import sqlalchemy as sa


def schema() -> sa.MetaData:
    metadata = sa.MetaData()
    jobs = sa.Table(
        "jobs", metadata,
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    unfinished_fit = sa.text("kind IN ('controller') AND status IN ('queued', 'running')")
    sa.Index("one_unfinished_exclusive_job", jobs.c.kind, jobs.c.task_name, unique=True,
             sqlite_where=unfinished_fit, postgresql_where=unfinished_fit)
    sa.Table(
        "service_settings", metadata,
        sa.Column("key", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    sa.Table(
        "tasks", metadata,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("verbalizers", sa.JSON(), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=True),
        sa.Column("separator", sa.Text(), nullable=False),
        sa.Column("default_k", sa.Integer(), nullable=True),
        sa.Column("pool_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "batches", metadata,
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("runs", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
    )
    sa.Table(
        "controllers", metadata,
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    examples = sa.Table(
        "examples", metadata,
        sa.Column("row_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.Integer(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("example_id", sa.String(length=128), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_version", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("task_id", "example_id"),
    )
    sa.Index("examples_task_changed", examples.c.task_id, examples.c.changed_version)
    sa.Table(
        "batch_items", metadata,
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("batches.job_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("client_id", sa.String(length=256), nullable=True),
        sa.Column("input", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("outcome", sa.JSON(none_as_null=True), nullable=True),
    )
    return metadata
