"""Call records made by hand, for the store, writer and page tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.server.records.model import BargeIn, CallRecord, Reconnect, Segment, Turn

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def record(n: int = 0, *, started: datetime | None = None, ended: bool = True) -> CallRecord:
    start = started or T0 + timedelta(minutes=n)
    turns = (
        Turn(0, 0.0, None, "Hello, how can I help?", "Hello, how", True, "ctx-1", None, None, 12.0, 95.0, 110.0),
        Turn(1, 3.2, None, "Sure, it ships today.", "Sure, it ships today.", False, "ctx-2", 600.0, None, 250.0,
             90.0, 340.0),
    )
    return CallRecord(
        call_id=f"CA{n:032x}", stream_id=f"MZ{n:032x}", carrier="twilio", from_number="+15551230000",
        to_number="+15557650000", started_at=start, ended_at=start + timedelta(seconds=6.5) if ended else None,
        ended_how="caller hung up" if ended else None, end_detail="stop" if ended else "",
        turns=turns, barge_ins=(BargeIn(0, 0, 1.1, 1.2, 100.0),),
        reconnects=(Reconnect(0, 2.0, 2.3, "1011 server error"),),
        segments=(Segment(0, "agent", 0.11, 1.2, "ctx-1", 0), Segment(1, "clear", 1.2, 1.2, "ctx-1"),
                  Segment(2, "caller", 1.1, 2.6, None, 1), Segment(3, "agent", 3.54, 5.9, "ctx-2", 1)),
    )
