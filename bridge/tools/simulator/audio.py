"""Caller audio for the phone simulator: WAV loading, µ-law, levels and the caller's timeline.

Everything here is pure and clock-free. The simulator renders the caller's whole line up front so that
sending a frame in the real-time loop costs only a slice and a base64 encode, which keeps the
simulator's own jitter out of the measurements when many calls run at once.
"""

from __future__ import annotations

import math
import warnings
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

with warnings.catch_warnings():
    # The stdlib module warns on 3.11/3.12; on 3.13+ the name comes from the audioop-lts package.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "SPEECH_DBFS",
    "ULAW_SILENCE",
    "Segment",
    "Timeline",
    "load_wav_8k",
    "pcm_to_ulaw",
    "speech_bounds",
    "ulaw_to_pcm",
]

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.02
FRAME_BYTES = 160  # one 20 ms µ-law frame; 320 bytes once decoded to PCM16
ULAW_SILENCE = 0xFF  # µ-law code for zero: what an idle phone line carries
SPEECH_DBFS = -40.0


def pcm_to_ulaw(pcm: bytes) -> bytes:
    """8 kHz PCM16 → µ-law, as the phone network encodes the caller's voice."""
    return audioop.lin2ulaw(pcm, 2)


def ulaw_to_pcm(ulaw: bytes) -> bytes:
    """µ-law → PCM16, as the handset decodes what the agent sends."""
    return audioop.ulaw2lin(ulaw, 2)


def load_wav_8k(path: str | Path) -> bytes:
    """Any PCM WAV (8/16/24/32-bit, mono or stereo, any rate) as 8 kHz mono PCM16.

    Why: people tune with recordings in whatever format their tools produce; the line is 8 kHz mono.
    soxr's one-shot resampler is fine here, this is not the per-frame path.
    """
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        raw = audioop.bias(raw, 1, -128)
    if width != 2:
        raw = audioop.lin2lin(raw, width, 2)
    samples = np.frombuffer(raw, dtype="<i2").astype(np.float32)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def frame_levels(pcm: bytes) -> list[float]:
    """RMS level of each 20 ms frame in dBFS (relative to full-scale 32768; silence is -inf)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    per_frame = FRAME_BYTES
    levels: list[float] = []
    for i in range(0, len(samples), per_frame):
        rms = math.sqrt(float(np.mean(samples[i : i + per_frame] ** 2)))
        levels.append(20 * math.log10(rms / 32768) if rms > 0 else -math.inf)
    return levels


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

