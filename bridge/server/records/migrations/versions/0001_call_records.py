"""The first call-records schema: calls, turns, barge-ins, TTS reconnects, timeline segments.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["downgrade", "upgrade"]

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("carrier", sa.String(32), nullable=False),
        sa.Column("from_number", sa.String(64)),
        sa.Column("to_number", sa.String(64)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("duration_s", sa.Float),
        sa.Column("ended_how", sa.String(32)),
        sa.Column("end_detail", sa.String(200), nullable=False),
        sa.Column("turns", sa.Integer, nullable=False),
        sa.Column("barge_ins", sa.Integer, nullable=False),
        sa.Column("tts_reconnects", sa.Integer, nullable=False),
        sa.Column("median_reply_ms", sa.Float),
        sa.Column("audio_path", sa.String(500)),
    )
    op.create_index("ix_calls_started", "calls", ["started_at", "call_id"])
    op.create_table(
        "turns",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("turn", sa.Integer, primary_key=True),
        sa.Column("at_s", sa.Float, nullable=False),
        sa.Column("caller_transcript", sa.Text),
        sa.Column("agent_text", sa.Text, nullable=False),
        sa.Column("heard_text", sa.Text),
        sa.Column("interrupted", sa.Boolean),
        sa.Column("context_ids", sa.String(500), nullable=False),
        sa.Column("end_of_turn_ms", sa.Float),
        sa.Column("stt_ms", sa.Float),
        sa.Column("llm_first_token_ms", sa.Float),
        sa.Column("tts_first_audio_ms", sa.Float),
        sa.Column("first_audio_sent_ms", sa.Float),
        sa.Column("first_audio_played_ms", sa.Float),
    )
    op.create_table(
        "barge_ins",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("turn", sa.Integer, nullable=False),
        sa.Column("onset_s", sa.Float, nullable=False),
        sa.Column("clear_s", sa.Float),
        sa.Column("reaction_ms", sa.Float, nullable=False),
    )
    op.create_table(
        "tts_reconnects",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("lost_s", sa.Float),
        sa.Column("connected_s", sa.Float, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("context_id", sa.String(64)),
        sa.Column("turn", sa.Integer),
    )


def downgrade() -> None:
    for table in ("segments", "tts_reconnects", "barge_ins", "turns"):
        op.drop_table(table)
    op.drop_index("ix_calls_started", table_name="calls")
    op.drop_table("calls")
