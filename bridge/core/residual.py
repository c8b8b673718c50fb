"""The caller's line after the echo canceller: a second way for a frame to prove it is the caller.

The echo guard (``bridge.core.echo``) judges the raw line: a caller must be louder than the
loudest echo could be. With the canceller engaged, the cleaned line holds the caller and a
residual echo 30 dB or more fainter, so a caller masked on the raw line (a quiet voice under a
loud echo) is plain there. But the cleaned line is not a better line in every way:

* AEC3 delays what it hands back by 11 ms at 8 kHz (its block framing) and its suppressor
  softens the first frames of double talk, so a caller heard on the cleaned line alone is heard
  40-60 ms later than on the raw line whenever the raw line could already tell;
* when the echo path moves, the canceller's filter is wrong until it re-converges (about a
  second), and the residual is then far louder than the loss learnt on the cleaned line;
* its suppressor modulates the line's noise with the echo, which a noise floor followed on the
  cleaned line alone takes for quiet gaps.

(Where ``libspeexdsp`` is installed, the cleaned line is a linear-only canceller's, without
AEC3's suppressor or its delay: ``bridge.core.aec``. The rules below hold for either.)

So the raw line keeps its say, exactly as without a canceller, and `CleanedLine` only adds: a
frame is the caller if the raw line says so, *or* if the cleaned frame is speech, clears the
cleaned line's noise floor, and is louder than the residual echo can be (a second `EchoGuard`,
learnt on the cleaned line). Two more conditions keep the cleaned line honest:

* *The line's noise.* AEC3's suppressor pushes the line's noise down with the echo and lets it
  back when the agent pauses, so a floor followed on the cleaned line sits at the suppressed
  level and the returning noise (which webrtcvad calls speech at -35 dBFS) stands 15 dB above
  it. A cleaned frame the canceller took little from (under `_REMOVED_DB`) holds no echo to
  speak of, so it must clear the raw line's floor as well.
* *A wrong filter.* The second way is trusted only while the residual loss in use was learnt
  (or handed over by the canceller's probe) since the last false alarm, and while the
  canceller's recent output does not follow what we played (``echoing``: the canceller's
  `follows_us`): after the echo path moves, the residual is our echo, far louder than the
  loss learnt on the cleaned line. A sound that came to nothing makes both guards doubt, and
  until the residual guard has re-learnt the raw line decides alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import webrtcvad

from bridge.core.echo import EchoConfig, EchoGuard
from bridge.core.noise import NoiseFloor, level_dbfs

__all__ = ["CleanedLine"]

_WARMUP_FRAMES = 6  # a fresh webrtcvad flags noise in its first 4-6 frames
_REMOVED_DB = 6.0  # a frame the canceller took less than this out of holds no echo to speak of


class CleanedLine:
    """The cleaned line's own noise floor, webrtcvad and residual echo guard, in step with the raw line."""

    __slots__ = ("_cleaned", "_end", "_frame", "_frame_bytes", "_frames", "_level", "_pending", "_rate",
                 "_reference", "_vad", "_vad_mode", "echoing", "floor", "guard")

    def __init__(self, echo: EchoConfig, snr_db: float, aggressiveness: int, frame_ms: int, rate: int) -> None:
        self.guard = EchoGuard(echo, rate)
        self.floor = NoiseFloor(snr_db)
        self._rate = rate
        self._frame_bytes = frame_ms * rate * 2 // 1000
        self._vad: webrtcvad.Vad | None = None  # made at first use: a call that never cleans never pays
        self._vad_mode = aggressiveness
        self._frames = 0
        self._pending = b""  # cleaned audio not yet judged, in step with the detector's raw frames
        self._cleaned = b""  # per pending byte, whether it was cleaned (1) or is a stand-in (0)
        self._frame = b""
        self._level = 0.0
        self._end = 0.0
        self._reference: np.ndarray | None = None
        self.echoing: Callable[[], bool] | None = None  # whether the canceller's recent output follows ours

    def feed(self, pcm: bytes | None, raw_len: int) -> None:
        """The cleaned version of the raw chunk about to be judged (None: not cleaned; its frames
        are then judged on the raw line alone)."""
        if pcm is None:
            self._pending += bytes(raw_len)
            self._cleaned += bytes(raw_len)
        else:
            self._pending += pcm
            self._cleaned += b"\x01" * len(pcm)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def sure(self, end: float, raw_level: float, raw_clears: bool, tone: bool, strict: bool = False) -> bool:
        """Whether the cleaned frame matching the raw frame ending at ``end`` proves the caller
        (the raw frame's level, and whether it clears the raw line's noise floor; ``strict``:
        bound the residual echo over every delay, as `EchoGuard.threshold_db`)."""
        size = self._frame_bytes
        frame, cleaned = self._pending[:size], self._cleaned[:size]
        self._pending, self._cleaned = self._pending[size:], self._cleaned[size:]
        self._frame = b""
        if len(frame) < size or b"\x00" in cleaned:
            return False
        if self._vad is None:
            self._vad = webrtcvad.Vad(self._vad_mode)
        self._frames += 1
        vad = self._vad.is_speech(frame, self._rate) and self._frames > _WARMUP_FRAMES
        level = level_dbfs(frame)
        floor = self.floor.update(level, vad)
        self._frame, self._level, self._end = frame, level, end
        self._reference = self.guard.reference(end)
        on_noise = raw_level - level < _REMOVED_DB and not raw_clears  # the raw frame is only the line's noise
        if not vad or tone or on_noise or not self.floor.clears(level, floor):
            return False
        bound = None if self._reference is None else self.guard.bound(end)
        echo = self.guard.threshold_db(self._reference, aligned=not strict, bound=bound)
        if not self.guard.fresh or (echo is not None and level <= echo):
            return False
        return self.echoing is None or not self.echoing()

    def settled(self, idle: bool) -> None:
        """A frame heard with no caller sound in progress teaches the residual guard."""
        if idle and self._frame:
            self.guard.learn(self._level, self._reference, self._frame, self._end)

    def doubt(self) -> None:
        self.guard.doubt()
