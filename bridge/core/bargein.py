"""Listening to the caller while the agent talks: what the core hears, as decisions.

`Listener` is the one object the core (and the ``bridge vad`` tuning tool) feeds caller audio
into. Per 20 ms frame it asks webrtcvad, then `LineGate` vetoes what is not the caller: the
line's noise floor and keypad tones (``bridge.core.noise``) and the agent's own echo
(``bridge.core.echo``). `bridge.core.vad.SpeechDetector` turns the surviving frames into a sound that
starts, is confirmed or dropped, and ends.

Soft barge-in is the core's policy on top of these changes (``bridge.core.call``): it pauses the agent
at `SpeechStarted`, resumes at `SpeechDropped`, and interrupts for good at `SpeechConfirmed`.
`BargeInConfig` holds the two numbers that shape it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.core.echo import EchoConfig, EchoGuard
from bridge.core.limits import within
from bridge.core.lineclock import LineClock
from bridge.core.noise import NoiseFloor, ToneDetector, level_dbfs
from bridge.core.residual import CleanedLine
from bridge.core.vad import SAMPLE_RATE, Change, FrameVerdict, SpeechDetector, VadConfig

__all__ = ["BargeInConfig", "LineGate", "Listener"]


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    confirm_ms: int = within(250, 0, 5_000)  # after a pause, a sound that stops within this is no interruption; 0: hard
    gap_ms: int = within(200, 20, 5_000)  # silence that ends an unconfirmed sound (longer than pauses between words)
    max_pause_ms: int = within(2_000, 100, 60_000)  # resume anyway if no caller audio settles a pause by then
    commit_ms: int = within(300, 0, 2_000)  # from the onset: a voiced, articulated sound this long interrupts (0: off)

    def __post_init__(self) -> None:
        if self.confirm_ms < 0 or self.gap_ms < 0 or self.commit_ms < 0:
            raise ValueError("confirm_ms, gap_ms and commit_ms must not be negative")


class LineGate:
    """Vetoes voiced frames that are too quiet over the noise floor, a keypad tone, or echo; with
    ``cleaned``, a frame the echo canceller cleaned may also prove the caller (`CleanedLine`).

    The echo threshold is worked out only for a frame it can veto (speech-like, no tone, clear of
    the floor): on a call without echo, most frames heard while the agent talks are none of
    those. With ``explain`` every verdict carries it (the tuning tools plot it)."""

    def __init__(self, vad: VadConfig, echo: EchoConfig, rate: int = SAMPLE_RATE, cleaned: bool = False,
                 explain: bool = False) -> None:
        self.floor = NoiseFloor(vad.snr_db)  # levels are per sample: the same at any rate
        self.tones = ToneDetector(vad.frame_ms * rate // 1000, rate) if vad.reject_tones else None
        self.echo = EchoGuard(echo, rate)
        self._settings = (vad, echo, rate)
        self._frame_s = vad.frame_ms / 1000
        self._frame = b""
        self._reference: np.ndarray | None = None  # the frame's `EchoGuard.reference`, if `_read`
        self._read = False
        self._end = 0.0  # the last frame's end on the line's own clock
        self.shift = 0.0  # the chunk being judged: its end on the line's clock less its arrival (`Listener.feed`)
        self._explain = explain
        self.cleaned: CleanedLine | None = None
        if cleaned:
            self.clean_too()

    def clean_too(self) -> CleanedLine:
        """From now on an echo canceller may hand `Listener.feed` a cleaned copy of the line."""
        if self.cleaned is None:
            vad, echo, rate = self._settings
            self.cleaned = CleanedLine(echo, vad.snr_db, vad.aggressiveness, vad.frame_ms, rate)
        return self.cleaned

    def judge(self, frame: bytes, end: float, vad: bool, strict: bool = False) -> FrameVerdict:
        """One frame: speech-like, sure to be the caller, or neither. ``strict``: ignore the learnt
        echo delay and bound echo by everything played in the whole echo window. The echo guards
        read what played by when the frame was spoken (`shift`), not when it arrived."""
        level = level_dbfs(frame)
        floor = self.floor.update(level, vad)
        self._end = end + self.shift
        self._frame = frame
        self._read = False
        tone = False
        if self.tones is not None:
            if vad:
                tone = self.tones.is_tone(frame)
            else:
                self.tones.reset()
        clears = self.floor.clears(level, floor)
        echo = None
        if self._explain or (vad and not tone and clears):
            self._reference = reference = self.echo.reference(self._end, self._frame_s)
            self._read = True
            if reference is not None:
                bound = self.echo.bound(self._end, self._frame_s)
                echo = self.echo.threshold_db(reference, aligned=not strict, bound=bound)
        sure = vad and not tone and clears and (echo is None or level > echo)
        cleaned = self.cleaned
        if cleaned is not None and cleaned.pending and cleaned.sure(self._end, level, clears, tone, strict):
            vad = sure = True  # the raw line still decides first: the cleaned one is later by the canceller
        speechlike = vad and not tone
        return FrameVerdict(end, sure, True, vad, level, floor, echo, tone, masked=speechlike and not sure,
                            faint=speechlike and not sure and not clears)

    def settled(self, verdict: FrameVerdict, idle: bool) -> None:
        """Frames heard with no caller sound in progress teach the echo guard how loud echo gets."""
        if idle and self._read:  # its reference read already (a frame it could veto): learnt at once
            self.echo.learn(verdict.level, self._reference, self._frame, self._end)
        elif idle:
            self.echo.learn_later(verdict.level, self._end, self._frame, self._frame_s)
        if self.cleaned is not None:
            self.cleaned.settled(idle)

    def doubt(self) -> None:
        """The sound in progress was nothing: both echo guards re-learn their delay (and the
        cleaned line is not trusted until its guard has)."""
        self.echo.doubt()
        if self.cleaned is not None:
            self.cleaned.doubt()


class Listener:
    """Caller audio in, speech changes out; the echo reference in from the playback side."""

    def __init__(
        self,
        vad: VadConfig,
        barge_in: BargeInConfig | None = None,
        echo: EchoConfig | None = None,
        *,
        pause_ms: int = 0,
        keep_verdicts: bool = False,
        rate: int = SAMPLE_RATE,
        cleaned: bool = False,
    ) -> None:
        """``pause_ms``: report candidate ends of turn after this much silence (0: off); ``cleaned``:
        an echo canceller may hand `feed` a cleaned copy of the line."""
        barge_in = barge_in or BargeInConfig()
        self.gate = LineGate(vad, echo or EchoConfig(), rate, cleaned, explain=keep_verdicts)
        self._line = LineClock(rate)
        self._rate = rate
        self.detector = SpeechDetector(
            vad, gate=self.gate, confirm_ms=barge_in.confirm_ms, gap_ms=barge_in.gap_ms,
            commit_ms=barge_in.commit_ms, pause_ms=pause_ms, keep_verdicts=keep_verdicts, rate=rate
        )

    def played(self, pcm: bytes, start: float) -> None:
        """A frame of the agent's audio will reach the caller at ``start`` (the echo reference)."""
        self.gate.echo.played(pcm, start)

    def cleared(self, at: float) -> None:
        """The carrier dropped what it had not yet started playing at ``at``."""
        self.gate.echo.cleared(at)

    def feed(self, pcm: bytes, at: float, cleaned: bytes | None = None) -> list[Change]:
        """A chunk of caller audio that arrived at ``at`` (and, when the echo canceller ran on
        it, the ``cleaned`` copy: the same length, our echo taken out). Its frames are timed by
        their arrival; the echo guards line them up with what played by when they were spoken
        (`LineClock`): after a stall of the worker's loop, frames read a second late at once held
        the echo of what played a second before, and passed the guard as the caller."""
        count = len(pcm) // 2
        self.gate.shift = self._line.start(count, at) + count / self._rate - at
        line = self.gate.cleaned
        if line is not None and (cleaned is not None or line.pending):
            line.feed(cleaned, len(pcm))
        return self.detector.feed(pcm, at)

    def discard(self) -> None:
        """The sound in progress was nothing (a cough, a click, or our echo that slipped through):
        forget it, and make the echo guard re-learn its delay."""
        self.detector.discard()
        self.gate.doubt()
