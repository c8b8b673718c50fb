"""Calls say why the echo canceller their echo called for was refused: ``calls.aec_refused``.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the calls recorded before say "" (never refused): the bridge did not record it then
    op.add_column("calls", sa.Column("aec_refused", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("aec_refused")
