"""What the live path's listener makes of a recording: segments, verdicts and levels per frame.

The data behind ``bridge vad``'s report and its plot, kept apart from both so neither imports the other.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soxr

from bridge.core.bargein import BargeInConfig, Listener
from bridge.core.echo import EchoConfig
from bridge.core.vad import FrameVerdict, SpeechConfirmed, SpeechDropped, SpeechEnded, SpeechStarted, VadConfig

__all__ = ["FRAME_S", "RATE", "Analysis", "Segment", "analyse", "read_wav"]

RATE = 8000
FRAME_S = 0.02
FRAME_SAMPLES = 160


@dataclass
class Segment:
    """One sound the detector started on: when it began, was noticed, settled and ended (seconds)."""

    onset: float
    started: float
    over_agent: bool  # the agent was audible: the core would pause it here
    confirmed: float | None = None
    dropped: float | None = None
    ended: float | None = None
    offset: float | None = None

    def describe(self) -> str:
        stop = f"{self.offset:.2f}" if self.offset is not None else "…"
        line = f"sound {self.onset:6.2f} - {stop:>6} s  detected at {self.started:.2f}"
        if self.over_agent:
            line += ": BARGE-IN, agent paused"
            if self.confirmed is not None:
                line += f"; confirmed at {self.confirmed:.2f}, agent stops"
            elif self.dropped is not None:
                line += f"; over by {self.dropped:.2f}, agent resumes (not an interruption)"
        elif self.confirmed is not None or self.dropped is not None:
            line += f"; caller turn, ends at {self.ended:.2f}" if self.ended is not None else "; caller turn"
        return line


@dataclass
class Analysis:
    duration: float
    verdicts: list[FrameVerdict]
    segments: list[Segment] = field(default_factory=list)
    erl_db: float | None = None  # the echo loss the guard learnt, if it did
    agent: np.ndarray | None = None
    line: np.ndarray = field(default_factory=lambda: np.zeros(0))


def read_wav(path: Path) -> np.ndarray:
    """Any PCM WAV (8/16/24/32-bit, any rate, any channels) as 8 kHz mono int16."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = (b[:, 0] | b[:, 1] << 8 | (b[:, 2].astype(np.int8).astype(np.int32) << 16)) / 8388608.0
    else:
        kind = {2: "<i2", 4: "<i4"}[width]
        x = np.frombuffer(raw, dtype=kind).astype(np.float64) / float(2 ** (8 * width - 1))
    x = x.reshape(-1, channels).mean(axis=1)
    if rate != RATE:
        x = soxr.resample(x, rate, RATE, quality="HQ")
    pcm: np.ndarray = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    return pcm


def analyse(
    line: np.ndarray,
    agent: np.ndarray | None,
    vad: VadConfig,
    barge_in: BargeInConfig,
    echo: EchoConfig,
) -> Analysis:
    """Feed ``line`` (and ``agent`` as the echo reference) through a `Listener`, frame by frame.

    The recording is padded with silence: ``warmup_ms`` before it, so speech at its very start is
    heard (on a call, the detector's first frames are the ring-back's silence), and ``end_ms``
    after it, so its last sound ends. Times are reported on the recording's own clock.
    """
    lead = -(-vad.warmup_ms // vad.frame_ms) * vad.frame_ms * RATE // 1000
    tail = (vad.end_ms + 300) * RATE // 1000  # room for webrtcvad's hangover too
    padded = np.concatenate((np.zeros(lead, np.int16), line, np.zeros(tail, np.int16)))
    if agent is not None:
        agent = np.concatenate((np.zeros(lead, np.int16), agent))
    raw = _run(padded, agent, vad, barge_in, echo)
    return _shifted(raw, lead / RATE, line, None if agent is None else agent[lead:])


def _run(line: np.ndarray, agent: np.ndarray | None, vad: VadConfig, barge_in: BargeInConfig,
         echo: EchoConfig) -> Analysis:
    listener = Listener(vad, barge_in, echo, keep_verdicts=True)
    frames = len(line) // FRAME_SAMPLES
    played = 0
    current: Segment | None = None
    segments: list[Segment] = []
    for k in range(frames):
        end = (k + 1) * FRAME_S
        while agent is not None and played * FRAME_SAMPLES < len(agent) and played * FRAME_S < end + FRAME_S:
            chunk = agent[played * FRAME_SAMPLES : (played + 1) * FRAME_SAMPLES]
            listener.played(chunk.astype("<i2").tobytes(), played * FRAME_S)
            played += 1
        pcm = line[k * FRAME_SAMPLES : (k + 1) * FRAME_SAMPLES].astype("<i2").tobytes()
        for change in listener.feed(pcm, end):
            current = _follow(change, current, segments, _agent_audible(agent, change.at))
            if isinstance(change, SpeechDropped) and segments and segments[-1].over_agent:
                listener.discard()  # what the core does when it resumes
                current = None
    verdicts = listener.detector.verdicts or []
    erl = listener.gate.echo.erl_db if listener.gate.echo.learnt else None
    return Analysis(frames * FRAME_S, verdicts, segments, erl, agent, line)


def _shifted(a: Analysis, by: float, line: np.ndarray, agent: np.ndarray | None) -> Analysis:
    """``a`` on a clock ``by`` seconds earlier, without the frames of the leading pad."""
    verdicts = [replace(v, end=v.end - by) for v in a.verdicts if v.end > by + 1e-9]
    segments = [
        Segment(s.onset - by, s.started - by, s.over_agent,
                *(None if t is None else t - by for t in (s.confirmed, s.dropped, s.ended, s.offset)))
        for s in a.segments
    ]
    return Analysis(len(line) / RATE, verdicts, segments, a.erl_db, agent, line)


def _agent_audible(agent: np.ndarray | None, at: float) -> bool:
    """Was the agent playing something at ``at`` (or within the echo of it)?"""
    if agent is None:
        return False
    lo, hi = max(0, int((at - 0.3) * RATE)), int(at * RATE)
    window = agent[lo:hi].astype(np.float64)
    return bool(window.size) and float(np.sqrt(np.mean(window**2))) > 32768 * 10 ** (-50 / 20)


def _follow(change: object, current: Segment | None, segments: list[Segment], audible: bool) -> Segment | None:
    match change:
        case SpeechStarted(at=at, onset=onset):
            current = Segment(onset, at, audible)
            segments.append(current)
        case SpeechConfirmed(at=at) if current is not None:
            current.confirmed = at
        case SpeechDropped(at=at, offset=offset) if current is not None:
            current.dropped, current.offset = at, offset
        case SpeechEnded(at=at, offset=offset) if current is not None:
            current.ended, current.offset = at, offset
            current = None
    return current
