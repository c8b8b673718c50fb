"""The echo guard's frequency bands: how a 20 ms frame's power splits over eight bands of 500 Hz.

The echo guard (``bridge.core.echo``) learns the line's echo loss per band, because real echo
paths are not flat (its docstring says why). This is the arithmetic on samples and powers it needs,
kept apart so the guard's module holds only the guard and stays within the core's size limit.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np

__all__ = [
    "BANDS", "BAND_HZ", "DEFAULT_RATE", "band_shares", "frame_shares", "moving_mean", "power_db", "sample_shares",
]

BAND_HZ: Final = 500  # width of the frequency bands the echo loss is learnt in
BANDS: Final = 4000 // BAND_HZ
DEFAULT_RATE: Final = 8000
_RATE = DEFAULT_RATE


@cache
def _band_starts(samples: int, rate: int) -> np.ndarray:
    """The first FFT bin of each band, for a frame of ``samples`` at ``rate``. The top band runs to
    half the rate: at 16 kHz it also holds 4-8 kHz, where speech has little power."""
    return np.array([round(b * BAND_HZ * samples / rate) for b in range(BANDS)])


@cache
def _window(samples: int) -> np.ndarray:
    """Hann: a voice's strong low harmonics would otherwise leak into every band above them,
    and a band-limited echo path, which removes them, would look 10 dB quieter than it is."""
    hann: np.ndarray = np.hanning(samples)
    scaled: np.ndarray = hann * np.sqrt(samples / float(np.sum(hann**2)))
    return scaled


@cache
def _analysis(samples: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The windowed DFT of a frame as one real matrix (cosine rows, then sine rows), and the 0/1
    matrix that sums its squares into bands: two small matrix products are several times
    cheaper per frame than an FFT call and its bookkeeping."""
    bins = np.arange(samples // 2 + 1)
    angle = 2 * np.pi * np.outer(bins, np.arange(samples)) / samples
    window = _window(samples)
    dft = np.vstack((np.cos(angle) * window, np.sin(angle) * window)).astype(np.float32)
    band = np.searchsorted(_band_starts(samples, rate), bins, side="right") - 1
    summing = np.zeros((BANDS, 2 * len(bins)), dtype=np.float32)
    summing[band, bins] = 1.0
    summing[band, len(bins) + bins] = 1.0
    return dft, summing


def band_shares(pcm: bytes | memoryview, rate: int = _RATE) -> np.ndarray:
    """How a PCM16 frame's power splits over the bands (sums to 1; flat for silence)."""
    return sample_shares(np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32), rate)


def sample_shares(x: np.ndarray, rate: int = _RATE) -> np.ndarray:
    """`band_shares` of a frame already as float32 samples."""
    dft, summing = _analysis(len(x), rate)
    spectrum = dft @ x
    spectrum *= spectrum
    sums: np.ndarray = (summing @ spectrum).astype(np.float64)
    total = float(sums.sum())
    if total <= 0.0:
        return np.full(BANDS, 1.0 / BANDS)
    sums /= total
    return sums


def frame_shares(frames: np.ndarray, rate: int = _RATE) -> np.ndarray:
    """`sample_shares` of several frames at once (rows of float32 samples), one row of shares each:
    the playout hands over a refill's frames together, and one matrix product for all of them
    costs little more than one for a single frame."""
    dft, summing = _analysis(frames.shape[1], rate)
    spectrum = frames @ dft.T
    spectrum *= spectrum
    sums: np.ndarray = (spectrum @ summing.T).astype(np.float64)
    totals = sums.sum(axis=1, keepdims=True)
    silent = totals[:, 0] <= 0.0
    totals[silent] = 1.0
    sums /= totals
    sums[silent] = 1.0 / BANDS
    return sums


@cache
def moving_mean(width: int, delays: int) -> np.ndarray:
    """The matrix that turns ``width + delays - 1`` consecutive cells into the mean of the last
    ``width`` of them moved back by each delay: column ``d`` averages cells ``delays - 1 - d`` to
    ``delays - 2 - d + width``. Built once per process; read-only."""
    span = width + delays - 1
    out = np.zeros((span, delays))
    for d in range(delays):
        out[delays - 1 - d : span - d, d] = 1.0 / width
    out.flags.writeable = False
    return out


def power_db(power: np.ndarray) -> np.ndarray:
    """Power (relative to full scale) in dB, silence floored at -100."""
    out: np.ndarray = np.maximum(power, 1e-10)
    np.log10(out, out=out)
    out *= 10.0
    return out
