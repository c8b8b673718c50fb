"""The fake's audio: a tone per context, its wire encoding, chunk sizes and alignment. Pure, no I/O.

The audio is a tone whose frequency identifies the context, so a test can tell from what reaches
the phone whose audio it is hearing, even after µ-law and resampling. Chunks are deliberately not
20 ms frames (protocols.md §1.4): a client that assumes they are breaks against the real service.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from bridge.core.audio import pcm_to_ulaw

__all__ = [
    "chunk_alignment",
    "encode_samples",
    "plan_chunks",
    "render_tone",
    "sample_width",
    "tone_frequency",
    "ulaw_encode",
]

TONE_PEAK = 10 ** (-12 / 20)  # -12 dBFS: loud enough for any VAD, far from clipping after resampling
ENVELOPE_HZ = 4.0  # roughly the syllable rate, so energy-based detectors see "speech-like" bursts


def tone_frequency(index: int, base_hz: float = 400.0) -> float:
    """Frequency for the ``index``-th context of a connection: ``base_hz`` and 150 Hz steps above it
    (by default 400 to 2650 Hz, which 8 kHz carries; from 5000 Hz, tones only a 16 kHz path keeps)."""
    return base_hz + 150.0 * (index % 16)


def render_tone(frequency: float, rate: int, start: int, count: int) -> np.ndarray:
    """``count`` int16 samples of the amplitude-modulated tone, from sample ``start`` on.

    Rendering from an absolute sample index keeps the phase continuous across segments, so a
    context's audio is one clean tone however it was chunked.
    """
    t = (np.arange(count, dtype=np.float64) + start) / rate
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * ENVELOPE_HZ * t)
    wave = TONE_PEAK * envelope * np.sin(2 * np.pi * frequency * t)
    return np.round(wave * 32767).astype(np.int16)


def ulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 µ-law of int16 samples, with the same codec the phone path decodes with."""
    return pcm_to_ulaw(samples.astype("<i2").tobytes())


def encode_samples(samples: np.ndarray, output_format: str) -> bytes:
    """Samples in the wire encoding: µ-law bytes, or raw s16le for every ``pcm_*``."""
    if output_format == "ulaw_8000":
        return ulaw_encode(samples)
    return samples.astype("<i2").tobytes()


def sample_width(output_format: str) -> int:
    """Bytes per sample on the wire: µ-law is one byte, every ``pcm_*`` is s16le."""
    return 1 if output_format == "ulaw_8000" else 2


def plan_chunks(
    total: int,
    bytes_per_ms: float,
    rng: random.Random,
    *,
    granule: int = 1,
    chunk_ms: tuple[float, float] = (40.0, 300.0),
) -> list[int]:
    """Byte sizes that add up to ``total``, each a random 40 to 300 ms: deliberately not 20 ms frames.

    ``granule`` is the smallest unit a chunk may be cut at (2 keeps s16le samples whole, 1 lets a
    chunk end in the middle of a sample).
    """
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        size = round(rng.uniform(*chunk_ms) * bytes_per_ms)
        size -= size % granule
        size = max(granule, min(size, remaining))
        sizes.append(size)
        remaining -= size
    return sizes


def chunk_alignment(
    text: str, ms_per_char: float, start_ms: float, end_ms: float, last: bool
) -> dict[str, list[Any]]:
    """Alignment for the characters whose start falls in ``[start_ms, end_ms)``, times relative to the chunk.

    Each character gets an equal ``ms_per_char`` slot; the last chunk takes any stragglers so
    every character is reported exactly once per segment.
    """
    first = max(0, math.ceil(start_ms / ms_per_char - 1e-9))
    stop = len(text) if last else min(len(text), math.ceil(end_ms / ms_per_char - 1e-9))
    indices = range(first, stop)
    return {
        "chars": [text[i] for i in indices],
        "charStartTimesMs": [max(0, round(i * ms_per_char - start_ms)) for i in indices],
        "charDurationsMs": [round(ms_per_char) for _ in indices],
    }

