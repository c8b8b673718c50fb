"""Caller audio for the phone simulator: WAV loading, levels and the caller's timeline.

Everything here is pure and clock-free. The G.711 codec, the level meter and the line's constants are
the phone path's own (`bridge.core.audio`): one µ-law for the bridge and the phone that dials it.
The simulator renders the caller's whole line up front so that sending a frame in the real-time loop
costs only a slice and a base64 encode, which keeps the simulator's own jitter out of the measurements
when many calls run at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.core.audio import FRAME_MS, SAMPLE_RATE, ULAW_FRAME_BYTES, pcm_level_dbfs
from bridge.tools.vad_analysis import read_wav

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "SPEECH_DBFS",
    "ULAW_SILENCE",
    "Segment",
    "Timeline",
    "load_wav_8k",
    "speech_bounds",
]

FRAME_SECONDS = FRAME_MS / 1000
FRAME_BYTES = ULAW_FRAME_BYTES  # one 20 ms µ-law frame; 320 bytes once decoded to PCM16
ULAW_SILENCE = 0xFF  # µ-law code for zero: what an idle phone line carries
SPEECH_DBFS = -40.0


def load_wav_8k(path: str | Path) -> bytes:
    """Any PCM WAV (8/16/24/32-bit, mono or stereo, any rate) as 8 kHz mono PCM16.

    Why: people tune with recordings in whatever format their tools produce; the line is 8 kHz mono.
    The same reader as ``bridge vad``'s, so a recording sounds the same to both tools.
    """
    return bytes(read_wav(Path(path)).astype("<i2").tobytes())


def frame_levels(pcm: bytes) -> list[float]:
    """RMS level of each 20 ms frame in dBFS (relative to full-scale 32768; silence is -inf)."""
    step = FRAME_BYTES * 2  # PCM16: two bytes a sample
    return [pcm_level_dbfs(pcm[i : i + step]) for i in range(0, len(pcm) - len(pcm) % 2, step)]


def speech_bounds(pcm: bytes, threshold_dbfs: float = SPEECH_DBFS) -> tuple[float, float] | None:
    """Offsets (s) of the start of the first and the end of the last 20 ms frame above the threshold.

    Why: WAV files carry leading/trailing silence or noise, so "the caller starts speaking" must be
    measured in the audio, not taken from where the file was placed. None if nothing is loud enough.
    """
    loud = [i for i, level in enumerate(frame_levels(pcm)) if level > threshold_dbfs]
    if not loud:
        return None
    end = min((loud[-1] + 1) * FRAME_SECONDS, len(pcm) / 2 / SAMPLE_RATE)
    return loud[0] * FRAME_SECONDS, end


@dataclass(frozen=True)
class Segment:
    """One stretch of caller audio placed on the call timeline (start in seconds from `start`)."""

    start: float
    pcm: bytes = field(repr=False)
    label: str = ""
    bounds: tuple[float, float] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", speech_bounds(self.pcm))

    @property
    def onset(self) -> float | None:
        """Call time at which the caller audibly starts (first frame above -40 dBFS)."""
        return None if self.bounds is None else self.start + self.bounds[0]

    @property
    def end(self) -> float | None:
        """Call time at which the caller audibly stops (end of the last frame above -40 dBFS)."""
        return None if self.bounds is None else self.start + self.bounds[1]


SegmentSpec = Segment | tuple[float, bytes] | tuple[float, bytes, str]


class Timeline:
    """What the caller says and when, plus an optional background looped under everything."""

    def __init__(self, segments: Iterable[SegmentSpec] = (), background: bytes | None = None) -> None:
        built = [_as_segment(spec, i) for i, spec in enumerate(segments)]
        self.segments: tuple[Segment, ...] = tuple(sorted(built, key=lambda s: s.start))
        self.background = background

    @classmethod
    def from_files(
        cls, placements: Iterable[tuple[float, str | Path]], background: str | Path | bytes | None = None
    ) -> Timeline:
        """Build from `(start_seconds, wav_path)` pairs; each segment is labelled with its file name."""
        segments = [Segment(start, load_wav_8k(p), Path(p).name) for start, p in placements]
        if isinstance(background, (str, Path)):
            background = load_wav_8k(background)
        return cls(segments, background)

    def render(self, duration: float) -> bytes:
        """The caller's line for `duration` seconds as PCM16: segments mixed over the background."""
        n = round(duration * SAMPLE_RATE)
        mix = np.zeros(n, dtype=np.int32)
        if self.background:
            bg = np.frombuffer(self.background[: len(self.background) // 2 * 2], dtype="<i2")
            if len(bg):
                mix += np.resize(bg, n).astype(np.int32)
        for seg in self.segments:
            _mix_in(mix, seg.pcm, round(seg.start * SAMPLE_RATE))
        return bytes(np.clip(mix, -32768, 32767).astype("<i2").tobytes())


def _as_segment(spec: SegmentSpec, index: int) -> Segment:
    if isinstance(spec, Segment):
        return spec
    start, pcm, *rest = spec
    label = str(rest[0]) if rest else f"segment {index + 1}"
    return Segment(float(start), bytes(pcm), label)


def _mix_in(mix: np.ndarray, pcm: bytes, offset: int) -> None:
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32)
    if offset < 0:
        samples, offset = samples[-offset:], 0
    room = max(0, len(mix) - offset)
    mix[offset : offset + min(room, len(samples))] += samples[:room]

