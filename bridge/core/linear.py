"""A linear-only echo canceller for the line the listener hears: the caller stays whole in double talk.

AEC3 (``bridge.core.aec``) is a linear filter followed by a non-linear suppressor. The suppressor
is what gives its output 30 dB and more of echo removal, which the speech-to-text wants; but in
double talk it cannot tell a quiet caller from the echo it sits on and takes both out (a caller
10 dB under the agent over a -6 dB echo lost 235 of 333 frames), so a barge-in heard on that line
comes late or not at all. ``pywebrtc-audio`` exposes neither the suppressor's settings nor the
linear filter's output. The listener's cleaned line therefore gets its own canceller, linear only:
it subtracts its estimate of the echo and never attenuates what is left, so a caller over the
echo comes through at their own level, with a residual echo some 20 dB under the raw one.

The filter is SpeexDSP's MDF (multidelay block frequency-domain adaptive filter, with its own
double-talk-robust step control; Valin, "On Adjusting the Learning Rate in Frequency Domain Echo
Cancellation With Double-Talk", IEEE TASLP 2007), loaded from the system's ``libspeexdsp``
(BSD; Debian's ``libspeexdsp1``) with ctypes, only its echo canceller (``speex_echo_*``, the
public API of ``speex/speex_echo.h``), not its residual suppressor (the preprocessor). The library
is optional: without it the listener's cleaned line is AEC3's, as before.

A long echo path needs a long filter, which converges slowly and costs more. The probe already
knows the echo's delay (its cross-correlation peak), so the far end is fed to this filter already
shifted by that delay (less `LEAD_S`, for the part of the room's response ahead of its peak), and
the filter only has to span the room's tail (`TAPS_S`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import weakref
from typing import Final, Protocol

import numpy as np

__all__ = ["LEAD_S", "TAPS_S", "Linear", "load_linear"]

LEAD_S: Final = 0.004  # the far end is shifted by the echo's delay less this (the response ahead of its peak)
TAPS_S: Final = 0.128  # the filter's length: the room's tail after the echo's delay
_SET_SAMPLING_RATE: Final = 24  # SPEEX_ECHO_SET_SAMPLING_RATE, speex/speex_echo.h

_lib: ctypes.CDLL | None = None
_tried = False


class Linear(Protocol):
    """A linear echo canceller: ``near`` and ``far`` in step, int16, whole blocks."""

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray: ...


def _load() -> ctypes.CDLL | None:
    """The library, once per process; None when it is not installed."""
    global _lib, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("speexdsp")
        try:
            lib = ctypes.CDLL(name) if name else None
        except OSError:
            lib = None
        if lib is not None:
            lib.speex_echo_state_init.restype = ctypes.c_void_p
            lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.speex_echo_ctl.restype = ctypes.c_int
            lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            lib.speex_echo_cancellation.restype = None
            lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 3
            lib.speex_echo_state_destroy.restype = None
            lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


class _Speex:
    """One SpeexDSP echo state: ``block`` samples a call, ``taps`` samples of echo path."""

    __slots__ = ("__weakref__", "_block", "_lib", "_out", "_state")

    def __init__(self, lib: ctypes.CDLL, rate: int, block: int, taps: int) -> None:
        self._lib, self._block = lib, block
        self._state = ctypes.c_void_p(lib.speex_echo_state_init(block, taps))
        value = ctypes.c_int(rate)
        lib.speex_echo_ctl(self._state, _SET_SAMPLING_RATE, ctypes.byref(value))
        self._out = np.zeros(block, np.int16)
        weakref.finalize(self, lib.speex_echo_state_destroy, self._state)

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray:
        near = np.ascontiguousarray(near, np.int16)
        far = np.ascontiguousarray(far, np.int16)
        out = np.empty(len(near), np.int16)
        size = self._block
        for k in range(0, len(near) - size + 1, size):
            self._lib.speex_echo_cancellation(
                self._state, near[k:].ctypes.data, far[k:].ctypes.data, self._out.ctypes.data)
            out[k : k + size] = self._out
        return out


def load_linear(rate: int, block: int, taps: int) -> Linear | None:
    """A fresh linear canceller working in ``block``-sample steps over ``taps`` samples of echo
    path, or None when ``libspeexdsp`` is not installed."""
    lib = _load()
    return None if lib is None else _Speex(lib, rate, block, taps)
