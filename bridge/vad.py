"""When is the caller talking? webrtcvad per frame, plus hysteresis in time.

A single frame's verdict is noisy: a click, a breath or a burst of line noise can be flagged
as speech. A turn needs a steadier signal, so speech *starts* only after ``start_ms`` of
voiced frames in a row and *ends* only after ``end_ms`` of unvoiced frames in a row. A fresh
webrtcvad flags noise in its first few frames (measured: 4–6 frames), so the first
``warmup_ms`` of a call never count.

The detector has no clock: each chunk of audio comes with the time it arrived, and every
frame inside it gets a time from its position in the stream. That is what lets the tuning
tool replay a recording through the very code the live path runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import webrtcvad

__all__ = ["FrameVerdict", "SpeechDetector", "SpeechEnded", "SpeechStarted", "VadConfig"]

SAMPLE_RATE = 8000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000


@dataclass(frozen=True, slots=True)
class VadConfig:
    aggressiveness: int = 3
    frame_ms: int = 20
    start_ms: int = 100
    end_ms: int = 600
    warmup_ms: int = 200

    def __post_init__(self) -> None:
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ValueError("aggressiveness must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30 (webrtcvad's frame sizes)")
        if self.start_ms < self.frame_ms or self.end_ms < self.frame_ms:
            raise ValueError("start_ms and end_ms must be at least one frame")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Caller speech confirmed at ``at``; it began at ``onset`` (first voiced frame of the run)."""

    at: float
    onset: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Caller silent for ``end_ms`` by ``at``; the speech stopped at ``offset``."""

    at: float
    offset: float


@dataclass(frozen=True, slots=True)
class FrameVerdict:
    """One frame's raw decision, for tuning tools and plots."""

    end: float
    voiced: bool
    counted: bool


class SpeechDetector:
    """webrtcvad with hysteresis over a stream of 8 kHz PCM16 chunks."""

    def __init__(self, config: VadConfig, *, keep_verdicts: bool = False) -> None:
        self.config = config
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._frame_bytes = config.frame_ms * BYTES_PER_MS
        self._frame_s = config.frame_ms / 1000
        self._start_frames = -(-config.start_ms // config.frame_ms)
        self._end_frames = -(-config.end_ms // config.frame_ms)
        self._warmup_frames = -(-config.warmup_ms // config.frame_ms)
        self._pending = b""
        self._frames_seen = 0
        self._voiced_run = 0
        self._silent_run = 0
        self._last_voiced_end = 0.0
        self.speaking = False
        self.verdicts: list[FrameVerdict] | None = [] if keep_verdicts else None

    def feed(self, pcm: bytes, at: float) -> list[SpeechStarted | SpeechEnded]:
        """Take a chunk that arrived at ``at`` (its last sample); return any change of state."""
        data = self._pending + pcm if self._pending else pcm
        size = self._frame_bytes
        whole = len(data) - len(data) % size
        self._pending = data[whole:]
        changes: list[SpeechStarted | SpeechEnded] = []
        for start in range(0, whole, size):
            # The chunk's last sample arrived at `at`; earlier frames ended earlier.
            end = at - (len(data) - start - size) / (2 * SAMPLE_RATE)
            change = self._frame(data[start : start + size], end)
            if change is not None:
                changes.append(change)
        return changes

    def _frame(self, frame: bytes, end: float) -> SpeechStarted | SpeechEnded | None:
        self._frames_seen += 1
        counted = self._frames_seen > self._warmup_frames
        voiced = counted and self._vad.is_speech(frame, SAMPLE_RATE)
        if self.verdicts is not None:
            self.verdicts.append(FrameVerdict(end, voiced, counted))
        if voiced:
            self._voiced_run += 1
            self._silent_run = 0
            self._last_voiced_end = end
            if not self.speaking and self._voiced_run >= self._start_frames:
                self.speaking = True
                return SpeechStarted(at=end, onset=end - self._voiced_run * self._frame_s)
        else:
            self._voiced_run = 0
            self._silent_run += 1
            if self.speaking and self._silent_run >= self._end_frames:
                self.speaking = False
                return SpeechEnded(at=end, offset=self._last_voiced_end)
        return None
