"""Whisper's log-mel input, in numpy: what Smart Turn v3 (a Whisper-encoder classifier) reads.

Whisper's front end, as published with the model (OpenAI's ``whisper/audio.py``) and in Hugging
Face's ``WhisperFeatureExtractor``: 16 kHz audio, a 400-sample (25 ms) periodic Hann window every
160 samples (10 ms), centred frames with reflection padding, the power spectrum through 80
Slaney-style mel filters (0-8 kHz, area-normalised), ``log10`` floored at 1e-10, clamped to 8
(decades) below the maximum, then scaled as ``(x + 4) / 4``. Smart Turn uses an 8 s window
(``[80, 800]``) and, like the feature extractor's ``do_normalize``, scales the waveform to zero
mean and unit variance first. Left-padding with silence to 8 s is the caller's job (`window`).
The filter bank is built once per process.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["FRAMES", "N_MELS", "RATE", "WINDOW_SAMPLES", "log_mel", "mel_filters", "window"]

RATE: Final = 16000
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 80
WINDOW_SAMPLES: Final = 8 * RATE
FRAMES: Final = WINDOW_SAMPLES // HOP  # 800

_F_BREAK, _MEL_BREAK = 1000.0, 15.0  # the Slaney scale: linear below 1 kHz, logarithmic above
_LOG_STEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
    linear = hz / (200.0 / 3.0)
    logarithmic = _MEL_BREAK + np.log(np.maximum(hz, 1e-9) / _F_BREAK) / _LOG_STEP
    return np.where(hz < _F_BREAK, linear, logarithmic)


def _mel_to_hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.where(mel < _MEL_BREAK, mel * (200.0 / 3.0), _F_BREAK * np.exp(_LOG_STEP * (mel - _MEL_BREAK)))


def mel_filters() -> NDArray[np.float64]:
    """``[N_MELS, N_FFT // 2 + 1]`` triangles, each of unit area per Hz (Slaney normalisation)."""
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(RATE / 2)), N_MELS + 2))
    bins_hz = np.linspace(0.0, RATE / 2, N_FFT // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / (centre - lower)
    falling = (upper - bins_hz[None, :]) / (upper - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    return triangles * (2.0 / (upper - lower))


_FILTERS: Final = mel_filters()
_HANN: Final = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic


def window(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """The last 8 s of 16 kHz audio, left-padded with silence when shorter (the turn ends at the right)."""
    tail = samples[-WINDOW_SAMPLES:]
    return np.concatenate([np.zeros(WINDOW_SAMPLES - tail.size, dtype=np.float32), tail.astype(np.float32)])


def log_mel(samples: NDArray[np.float32]) -> NDArray[np.float32]:
    """``[N_MELS, FRAMES]`` features of exactly `WINDOW_SAMPLES` samples of 16 kHz audio in [-1, 1]."""
    if samples.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"expected {WINDOW_SAMPLES} samples, got shape {samples.shape}")
    x = samples.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # FRAMES + 1 frames
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    mel = np.log10(np.maximum(power[:-1] @ _FILTERS.T, 1e-10)).T  # the last frame is dropped, as in Whisper
    mel = np.maximum(mel, mel.max() - 8.0)
    return np.asarray((mel + 4.0) / 4.0, dtype=np.float32)
