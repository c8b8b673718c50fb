"""What on the caller's line is not speech, though webrtcvad may say it is: noise, clicks, tones.

webrtcvad judges a frame by its spectrum, not its loudness, and it carries state: after a click or
a keypad tone it keeps saying "speech" for a few frames (measured: a single click gives a run of
four voiced 20 ms frames, a 300 ms DTMF tone twenty frames for fifteen of tone). Two cheap checks
catch what it lets through:

* `NoiseFloor` follows the line's background level and asks a voiced frame to stand ``snr_db``
  above it. A click's or a tone's afterglow sits at the floor, so it fails; speech sits 20-40 dB
  above any floor a phone line has.
* `ToneDetector` recognises DTMF: at least 65 % of a frame's energy at one keypad low-group
  frequency (697-941 Hz) and one high-group frequency (1209-1633 Hz), within 10 dB of each
  other, the same pair two frames running. Measured, mu-law coded: on the eight voices in
  ``tests/audio`` no speech frame holds more than 61 % (99 % hold under 49 %); keypad tones
  1.5 % off their nominal pitch hold at least 70 % from 10 dB above white noise up.

Both work on one 20 ms frame at a time, hold their own state, and never read a clock.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import numpy as np

from bridge.core.audio import pcm_level_dbfs

__all__ = ["FLOOR_MIN_DBFS", "NoiseFloor", "ToneDetector", "level_dbfs"]

FLOOR_MIN_DBFS: Final = -70.0
"""The floor never goes below this: digital silence would otherwise let any whisper of noise
through as "70 dB above the floor"."""

_RISE_DB: Final = 0.2  # per frame, the most a frame the VAD calls silence may raise the floor (10 dB/s)
_SLOW_DB: Final = 0.02  # per frame, the most a frame the VAD calls speech may raise the floor (1 dB/s)

_KEYPAD_HZ: Final = (697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0)  # low group, high group
_SHARE: Final = 0.65  # the two tones hold at least this share of the frame's energy
_TWIST_DB: Final = 10.0  # and are within this many dB of each other


def level_dbfs(pcm: bytes) -> float:
    """RMS level of a frame in dBFS; digital silence reads as `FLOOR_MIN_DBFS` - 10."""
    level = pcm_level_dbfs(pcm)
    return level if math.isfinite(level) else FLOOR_MIN_DBFS - 10.0


class NoiseFloor:
    """The line's background level, followed frame by frame, and a gate ``snr_db`` above it.

    It falls at once to any quieter frame and climbs slowly: 10 dB a second through frames the
    VAD calls silence (a noise that starts mid-call is learnt in a few seconds, while webrtcvad
    alone already ignores steady noise up to -35 dBFS), 1 dB a second through frames it calls
    speech, so neither a sentence nor its quiet consonants lift the floor into the speech. The
    first frame sets it.
    """

    __slots__ = ("db", "snr_db")

    def __init__(self, snr_db: float) -> None:
        self.snr_db = snr_db
        self.db: float | None = None

    def update(self, level_db: float, vad_voiced: bool) -> float:
        """Fold one frame's level in; return the floor the frame is judged against (before it)."""
        floor = self.db if self.db is not None else max(level_db, FLOOR_MIN_DBFS)
        if level_db <= floor:
            self.db = max(level_db, FLOOR_MIN_DBFS)
        else:
            self.db = min(level_db, floor + (_SLOW_DB if vad_voiced else _RISE_DB))
        return floor

    def clears(self, level_db: float, floor_db: float) -> bool:
        """Is a frame at ``level_db`` loud enough over ``floor_db`` to be anyone talking? (``snr_db`` 0: always)"""
        return self.snr_db <= 0 or level_db >= floor_db + self.snr_db


class ToneDetector:
    """DTMF keypad tones, frame by frame (see the module notes for the rule and its numbers).

    The frame's power at the eight keypad frequencies comes from one small matrix product (a
    Goertzel filter bank, Hann-windowed, as cosine and sine rows so it stays real), scaled so that
    a pure tone at one of them reads 1.0 of the frame's energy. It runs on every frame webrtcvad
    calls voiced, so it is kept to a few numpy calls.
    """

    __slots__ = ("_bank", "_previous", "_scale", "_window", "_window2")

    def __init__(self, frame_samples: int = 160, rate: int = 8000) -> None:
        self._window, self._window2, self._bank, self._scale = _filter_bank(frame_samples, rate)
        self._previous: tuple[int, int] | None = None

    def is_tone(self, pcm: bytes) -> bool:
        """True when this frame and the one before hold the same keypad tone pair."""
        pair = self._pair(pcm)
        previous, self._previous = self._previous, pair
        return pair is not None and pair == previous

    def reset(self) -> None:
        """Forget the previous frame (a frame was skipped)."""
        self._previous = None

    def _pair(self, pcm: bytes) -> tuple[int, int] | None:
        """The strongest low and high keypad frequencies, if together they hold the frame."""
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
        if len(samples) != len(self._window):
            return None
        total = float((samples * samples) @ self._window2) * self._scale
        if total <= 0.0:
            return None
        parts = self._bank @ samples
        parts *= parts
        p = parts.tolist()
        if sum(p) < _SHARE * total * (1 - 1e-9):  # all eight together hold too little (speech, nearly always):
            return None  # no pair can hold enough, whatever the rounding below
        power = [(p[i] + p[i + 8]) / total for i in range(8)]
        low = max(range(4), key=power.__getitem__)
        high = max(range(4, 8), key=power.__getitem__)
        if power[low] + power[high] < _SHARE or min(power[low], power[high]) <= 0.0:
            return None
        return (low, high) if abs(10 * math.log10(power[low] / power[high])) <= _TWIST_DB else None


@functools.cache
def _filter_bank(frame_samples: int, rate: int = 8000) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The window, its square, the bank and the scale for one frame size: built once per process,
    not once per call (it is most of what a new call costs to set up). Read-only from here on."""
    n = np.arange(frame_samples)
    window = np.hanning(frame_samples)
    phase = 2 * np.pi * np.array(_KEYPAD_HZ)[:, None] * n[None, :] / rate
    bank = np.vstack((np.cos(phase), np.sin(phase))) * window
    scale = float(window.sum() ** 2 / (2 * np.dot(window, window)))
    for array in (window, bank):
        array.flags.writeable = False
    window2 = window * window
    window2.flags.writeable = False
    return window, window2, bank, scale
