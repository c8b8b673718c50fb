"""The call's timeline as SVG shapes, computed here so the template only places them.

Rows from the top: the caller's speech, then one row per TTS context (the agent's audio as the
caller heard it, a context per reply), with barge-ins (speech onset to clear), clears and TTS
reconnects (socket lost to back) drawn across every row. Plain SVG in the page: no script, no CDN, and it prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Bar", "Box", "Mark", "Timeline", "latency_bars", "timeline"]

WIDTH = 1000.0
LABEL_W = 120.0
ROW_H = 26.0
TOP = 22.0
LATENCY_PARTS = (
    ("end_of_turn_ms", "end of turn"), ("stt_ms", "STT"), ("llm_first_token_ms", "LLM first token"),
    ("tts_first_audio_ms", "TTS first audio"), ("first_audio_sent_ms", "first audio sent"),
    ("first_audio_played_ms", "first audio played"),
)


@dataclass(frozen=True, slots=True)
class Box:
    x: float
    y: float
    w: float
    kind: str
    title: str
    context: str = ""


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    w: float
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class Timeline:
    width: float
    height: float
    row_h: float
    label_w: float
    rows: tuple[tuple[str, float], ...]  # (label, y)
    boxes: tuple[Box, ...]
    marks: tuple[Mark, ...]
    ticks: tuple[tuple[float, str], ...]  # (x, label)


@dataclass(frozen=True, slots=True)
class Bar:
    name: str
    ms: float | None
    pct: float


def timeline(call: dict[str, Any]) -> Timeline:
    segments, barge_ins = call.get("segments", []), call.get("barge_ins", [])
    contexts = list(dict.fromkeys(s["context_id"] or "?" for s in segments if s["kind"] == "agent"))
    rows = [("caller", TOP)] + [(f"agent {cid}", TOP + ROW_H * (i + 1)) for i, cid in enumerate(contexts)]
    row_y = {label: y for label, y in rows}
    end = max([call.get("duration_s") or 0.0] + [s["end_s"] for s in segments] + [1.0])
    scale = (WIDTH - LABEL_W - 10) / end

    def x(t: float) -> float:
        return round(LABEL_W + max(0.0, t) * scale, 2)

    boxes: list[Box] = []
    marks: list[Mark] = []
    for s in segments:
        span = f"{s['start_s']:.2f}–{s['end_s']:.2f} s"
        if s["kind"] == "caller":
            boxes.append(Box(x(s["start_s"]), row_y["caller"], max(1.0, (s["end_s"] - s["start_s"]) * scale),
                             "caller", f"caller speech, turn {s['turn']}: {span}"))
        elif s["kind"] == "agent":
            cid = s["context_id"] or "?"
            boxes.append(Box(x(s["start_s"]), row_y[f"agent {cid}"], max(1.0, (s["end_s"] - s["start_s"]) * scale),
                             "agent", f"agent audio, context {cid} (turn {s['turn']}): {span}", cid))
        else:
            marks.append(Mark(x(s["start_s"]), 0.0, "clear", f"playback cleared at {s['start_s']:.2f} s"))
    for b in barge_ins:
        stop = b["clear_s"] if b["clear_s"] is not None else b["onset_s"] + b["reaction_ms"] / 1000
        marks.append(Mark(x(b["onset_s"]), max(2.0, (stop - b["onset_s"]) * scale), "barge-in",
                          f"barge-in on turn {b['turn']}: speech at {b['onset_s']:.2f} s, "
                          f"cleared {b['reaction_ms']:.0f} ms later"))
    for r in call.get("tts_reconnects", []):
        lost = r["lost_s"] if r["lost_s"] is not None else r["connected_s"]
        marks.append(Mark(x(lost), max(2.0, (r["connected_s"] - lost) * scale), "reconnect",
                          f"TTS reconnect: lost at {lost:.2f} s, back at {r['connected_s']:.2f} s"
                          + (f" ({r['reason']})" if r["reason"] else "")))
    step = next(s for s in (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600) if end / s <= 12)
    ticks = tuple((x(t), f"{t:g} s") for t in range(0, int(end) + 1, step))
    height = TOP + ROW_H * len(rows) + 8
    return Timeline(WIDTH, height, ROW_H - 6, LABEL_W, tuple(rows), tuple(boxes), tuple(marks), ticks)


def latency_bars(turn: dict[str, Any], longest_ms: float) -> list[Bar]:
    """One bar per latency part, scaled to the call's longest; a part not measured shows as such."""
    bars = []
    for key, name in LATENCY_PARTS:
        ms = turn.get(key)
        bars.append(Bar(name, ms, 0.0 if ms is None or longest_ms <= 0 else round(100 * ms / longest_ms, 1)))
    return bars
