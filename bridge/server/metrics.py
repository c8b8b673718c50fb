"""Prometheus metrics at ``GET /metrics``: what an operator and an autoscaler need to see.

Calls are independent, so capacity grows with processes; these figures say when to add some:
live calls per process, calls turned away, how late the pacing clock runs (the first sign of an
overloaded worker: past ``low_ms`` of lateness the caller hears gaps) and how long callers wait for
the agent's voice. Plus the events worth alerting on: barge-ins, TTS reconnects, late audio dropped.

Updates happen at event granularity (a call starts or ends, a reply's first audio goes out, the
pacing timer fires), never per 20 ms media frame; per-call counts come from the core's snapshot
when the call ends.

Several worker processes (``uvicorn --workers N``, gunicorn) share one set of figures when
``PROMETHEUS_MULTIPROC_DIR`` names an empty, writable directory at start-up: every process then
writes its values to files there, and ``/metrics`` in any of them reports the sum over all
(prometheus_client's multiprocess mode). Live-call gauges of a process that died are dropped at
the next scrape. Without the variable, each process reports its own figures.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from bridge.core.call import CallSnapshot

__all__ = [
    "AEC_CALLS",
    "AEC_FRAMES",
    "BARGE_INS",
    "CALLS",
    "CALLS_REJECTED",
    "DROPPED_AUDIO_BYTES",
    "DROPPED_AUDIO_CHUNKS",
    "FRAME_LATENESS",
    "LIVE_CALLS",
    "REPLY_LATENCY",
    "TTS_FAILOVERS",
    "TTS_RECONNECTS",
    "TURN_STAGES",
    "call_ended",
    "call_started",
    "frame_lateness",
    "metrics_endpoint",
    "multiprocess_dir",
    "reply_latency",
    "tts_failover",
    "turn_stage",
]

def multiprocess_dir() -> Path | None:
    """Where worker processes share their figures, if they do."""
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(value) if value else None


def _ensure_multiprocess_dir() -> None:
    """prometheus_client writes a file there as each metric is created (just below, at import): a
    missing directory would crash every worker at start-up, and a process manager that restarts
    crashed workers would loop. So it is created when absent."""
    folder = multiprocess_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)


_ensure_multiprocess_dir()

LIVE_CALLS = Gauge(
    "bridge_live_calls", "Calls in progress (summed over the live worker processes)", multiprocess_mode="livesum"
)
CALLS = Counter("bridge_calls", "Calls taken: media streams that were accepted")
CALLS_REJECTED = Counter("bridge_calls_rejected", "Calls turned away because max_calls was reached or the server "
                         "was draining (at the webhook or the media upgrade), or the worker was over max_load (at the "
                         "webhook)")
BARGE_INS = Counter("bridge_barge_ins", "Times a caller interrupted the agent (counted when the call ends)")
AEC_CALLS = Counter("bridge_aec_calls", "Calls on which the echo canceller ran (counted when the call ends)")
AEC_REFUSED = Counter("bridge_aec_refused", "Calls whose echo called for the echo canceller while the worker ran "
                      "aec.max_engaged of them (budget), or lagged behind its calls or was busy (lag): the level "
                      "guard alone judged them until a later ask was granted, if one was (counted once per call, "
                      "by the first reason, when the call ends)", ["reason"])
AEC_FRAMES = Counter("bridge_aec_frames", "Caller frames (20 ms) the echo canceller processed (counted when the call "
                     "ends)")
TTS_RECONNECTS = Counter("bridge_tts_reconnects", "TTS connections opened again after a call's first (counted when "
                         "the call ends)")
TTS_FAILOVERS = Counter("bridge_tts_failovers", "Calls whose voice failed for good and went on in the next voice",
                        ["from_voice", "to_voice"])
DROPPED_AUDIO_CHUNKS = Counter("bridge_dropped_audio_chunks", "TTS audio chunks of retired contexts, dropped unplayed "
                               "(counted when the call ends)")
DROPPED_AUDIO_BYTES = Counter("bridge_dropped_audio_bytes", "Bytes of PCM in those dropped chunks")
FRAME_LATENESS = Histogram(
    "bridge_frame_lateness_seconds",
    "How late each call's pacing timer fired: audio for the caller goes out this much after it was due. Past "
    "playback.low_ms the caller's queue runs dry",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.2, 0.5, 1.0),
)
REPLY_LATENCY = Histogram(
    "bridge_reply_latency_seconds",
    "From the start of a turn (call start for the greeting, the caller's end of speech for a reply) to its first "
    "audio sent to the caller: agent, TTS and bridge together",
    ["kind"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
_GREETING, _REPLY = REPLY_LATENCY.labels("greeting"), REPLY_LATENCY.labels("reply")
TURN_STAGES = Histogram(
    "bridge_turn_stage_seconds",
    "Where a reply's time goes, per stage: end_of_turn (silence after the caller's speech until the turn was "
    "sure), agent_first_text (turn start to the agent's first text: transcription, unless live, and the LLM's "
    "first token), tts_first_audio (a context's first text to its first "
    "audio), playout_start (the turn's start, or its confirmation, to its first audio sent to the caller)",
    ["stage"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
)
STAGES = ("end_of_turn", "agent_first_text", "tts_first_audio", "playout_start")


def call_started() -> None:
    CALLS.inc()
    LIVE_CALLS.inc()


def call_ended(snapshot: CallSnapshot, tts_connects: int) -> None:
    LIVE_CALLS.dec()
    if snapshot.barge_ins:
        BARGE_INS.inc(snapshot.barge_ins)
    if snapshot.aec_frames:
        AEC_CALLS.inc()
        AEC_FRAMES.inc(snapshot.aec_frames)
    if snapshot.aec_refused:
        AEC_REFUSED.labels(snapshot.aec_refused).inc()
    if tts_connects > 1:
        TTS_RECONNECTS.inc(tts_connects - 1)
    if snapshot.dropped_audio_chunks:
        DROPPED_AUDIO_CHUNKS.inc(snapshot.dropped_audio_chunks)
        DROPPED_AUDIO_BYTES.inc(snapshot.dropped_audio_bytes)


def reply_latency(seconds: float, greeting: bool) -> None:
    (_GREETING if greeting else _REPLY).observe(max(0.0, seconds))


def turn_stage(stage: str, seconds: float) -> None:
    """One stage of one turn (``STAGES``)."""
    TURN_STAGES.labels(stage).observe(max(0.0, seconds))


def tts_failover(old: str, new: str, why: str) -> None:
    """A call's voice failed over (``why`` is for the log, kept out of the labels)."""
    del why
    TTS_FAILOVERS.labels(old, new).inc()


def frame_lateness(seconds: float) -> None:
    FRAME_LATENESS.observe(max(0.0, seconds))


_PID_FILE = re.compile(r"_(\d+)\.db$")


def _forget_dead_processes(folder: Path) -> None:
    """Drop the live-call gauges of worker processes that are gone (a crash, a restart)."""
    for path in folder.glob("gauge_live*.db"):
        match = _PID_FILE.search(path.name)
        if match is None:
            continue
        pid = int(match[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, someone else's


def _exposition() -> bytes:
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest(REGISTRY)
    _forget_dead_processes(folder)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    """The Prometheus text format; scraping reads files in multiprocess mode, so it runs off the loop."""
    from starlette.concurrency import run_in_threadpool

    body = await run_in_threadpool(_exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
