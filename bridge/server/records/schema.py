"""The tables. Changing them means a new migration in ``migrations/versions``: the database is
upgraded in place at start-up and never dropped and recreated."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text

__all__ = ["barge_ins", "calls", "metadata", "reconnects", "segments", "turns"]

metadata = MetaData()

calls = Table(
    "calls", metadata,
    Column("call_id", String(64), primary_key=True),  # the carrier's id (Twilio CallSid)
    Column("stream_id", String(64), nullable=False),
    Column("carrier", String(32), nullable=False),
    Column("from_number", String(64)),
    Column("to_number", String(64)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("duration_s", Float),
    Column("ended_how", String(32)),
    Column("end_detail", String(200), nullable=False, default=""),
    Column("turns", Integer, nullable=False, default=0),
    Column("barge_ins", Integer, nullable=False, default=0),
    Column("tts_reconnects", Integer, nullable=False, default=0),
    Column("median_reply_ms", Float),
    Column("audio_path", String(500)),
    # why the echo canceller the call's echo called for was refused, at least once: "budget", "lag" (or "")
    Column("aec_refused", String(16), nullable=False, default=""),
    Index("ix_calls_started", "started_at", "call_id"),
)

turns = Table(
    "turns", metadata,
    Column("call_id", String(64), primary_key=True),
    Column("turn", Integer, primary_key=True),
    Column("at_s", Float, nullable=False),
    Column("caller_transcript", Text),
    Column("agent_text", Text, nullable=False, default=""),
    Column("heard_text", Text),
    Column("interrupted", Boolean),
    Column("context_ids", String(500), nullable=False, default=""),
    Column("end_of_turn_ms", Float),
    Column("stt_ms", Float),
    Column("llm_first_token_ms", Float),
    Column("tts_first_audio_ms", Float),
    Column("first_audio_sent_ms", Float),
    Column("first_audio_played_ms", Float),
)

barge_ins = Table(
    "barge_ins", metadata,
    Column("call_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("turn", Integer, nullable=False),
    Column("onset_s", Float, nullable=False),
    Column("clear_s", Float),
    Column("reaction_ms", Float, nullable=False),
)

reconnects = Table(
    "tts_reconnects", metadata,
    Column("call_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("lost_s", Float),
    Column("connected_s", Float, nullable=False),
    Column("reason", String(200), nullable=False, default=""),
)

segments = Table(
    "segments", metadata,
    Column("call_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # caller | agent | clear
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("context_id", String(64)),
    Column("turn", Integer),
)
