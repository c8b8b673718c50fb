"""The echo canceller's probe: does this call have echo, how loud, and how late?

Auto mode (``bridge.core.aec``) runs a canceller only on calls whose echo calls for it. The probe
decides, on the raw line and without any canceller: the part of the caller's audio that follows
what we played (one cross-correlation over every delay up to the longest echo path) is the echo,
and its loss against what we played is the call's echo return loss, within a dB at any delay. A
caller talking over the first reply, or line hiss, does not follow what we played and does not
count. `correlation` is the same test on a short stretch of a canceller's output: whether what it
let through follows us (a residual echo) or not (a caller).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Final, Protocol

import numpy as np

__all__ = ["AUDIBLE", "COHERENT", "Playback", "Probe", "correlation"]

AUDIBLE: Final = 104  # int16 peak of -50 dBFS: quieter played frames echo nothing worth cancelling
COHERENT: Final = 0.3  # a line, or a canceller's output, correlates at least this much with ours when it is echo


class Playback(Protocol):
    """What we played, sample by sample on the call's clock (``bridge.core.aec``'s record of it)."""

    def read(self, first: int, count: int) -> np.ndarray: ...


class Probe:
    """Auto mode's first look at a call, on the raw line and without the canceller: how much of
    the caller's audio follows what we played, and how loud that part is against it (the ERL).
    Echo is our signal through a linear path, so at the echo's delay it correlates with what we
    played; a caller talking over us, or line hiss, does not. So the line is cross-correlated with
    the far end over every delay up to ``max_delay``, once, when the probe has heard enough; the
    share of the line's power that follows ours at the best delay is the echo's (coherence
    squared), and a line whose coherence stays under `COHERENT` holds no echo to speak of.
    Judging the raw line needs no canceller at all: a call without echo never runs one. The
    blocks are kept, as the canceller would have been given them, so that a call judged echoic
    can run the canceller over them at once and start as converged as if it had run all along."""

    __slots__ = ("_lags", "_left", "_limit", "_next", "_stretches", "chunks", "coherence", "delay", "erl_db",
                 "erle_db")

    def __init__(self, samples: int, rate: int, max_delay_s: float) -> None:
        self._left = samples  # audible playback still to hear before judging
        self._limit = 4 * samples  # judge with what there is after this much playback, however quiet
        self._lags = round(max_delay_s * rate)
        self._next = -1  # the sample after the last block kept: a block elsewhere starts a new stretch
        self.chunks: list[tuple[int, np.ndarray, np.ndarray, bool]] = []  # first sample, near, far, audible
        self._stretches: list[tuple[np.ndarray, int]] = []  # far before each stretch, index of its first chunk
        self.erl_db: float | None = None
        self.erle_db = 0.0  # what the canceller removed over the probe (near over its output), once it runs
        self.coherence: float | None = None  # the line's peak normalised correlation with what we played
        self.delay = 0  # the echo's delay behind what we played, in samples (the correlation's peak)

    def add(self, first: int, near: np.ndarray, far: np.ndarray, played: Playback) -> bool:
        """One block the canceller would run on (``far`` read from ``played``); whether the probe
        has heard enough to judge (`judge`)."""
        if first != self._next:  # a new stretch of playback: keep what played up to the longest delay before it
            self._stretches.append((played.read(first - self._lags, self._lags), len(self.chunks)))
        self._next = first + len(near)
        x = far.astype(np.float64)
        audible = float(np.dot(x, x)) >= len(far) * float(AUDIBLE) ** 2  # else we were quiet: nothing to learn
        self.chunks.append((first, near, far, audible))
        self._left -= len(far) if audible else 0
        self._limit -= len(far)
        return self._left <= 0 or self._limit <= 0

    def judge(self) -> float:
        """The call's ERL in dB, infinite when the line does not follow what we played: the far
        end's power at the best delay over the part of the line's power that follows it
        (|f_k|^2 / (|y|^2 c^2), c the coherence), i.e. the inverse square of the echo path's gain
        at that delay. Summed over the stretches the probe heard."""
        corr = np.zeros(self._lags + 1)
        windows = np.zeros(self._lags + 1)
        power = 0.0
        for played, chunks in self._stretch_fars():
            near = np.concatenate([c[1] for c in chunks]).astype(np.float64)
            c, w = _xcorr(near, played.astype(np.float64), self._lags)
            corr += c
            windows += w
            power += float(np.dot(near, near))
        shares = np.abs(corr) / np.sqrt(np.maximum(windows, 1e-9) * max(power, 1e-9))
        best = int(np.argmax(shares))
        self.delay = best
        self.coherence = float(shares[best])
        if self.coherence < COHERENT:
            self.erl_db = math.inf  # the line does not follow ours: no echo to speak of
        else:
            self.erl_db = 10 * math.log10(max(float(windows[best]), 1.0) / (power * self.coherence**2))
        return self.erl_db

    def shifted(self, shift: int) -> list[np.ndarray]:
        """Each kept block's far end as played ``shift`` samples (at most the longest delay) earlier:
        what the linear canceller, fed the far end already delayed like the echo, is given."""
        out: list[np.ndarray] = []
        for played, chunks in self._stretch_fars():
            at = self._lags - shift
            for c in chunks:
                out.append(played[at : at + len(c[2])])
                at += len(c[2])
        return out

    def _stretch_fars(self) -> Iterator[tuple[np.ndarray, list[tuple[int, np.ndarray, np.ndarray, bool]]]]:
        """Each stretch of playback the probe kept: what played over it, from the longest delay
        before its first block on, and its blocks."""
        bounds = [i for _, i in self._stretches[1:]] + [len(self.chunks)]
        for (before, i), j in zip(self._stretches, bounds, strict=True):
            chunks = self.chunks[i:j]
            yield np.concatenate([before, *(c[2] for c in chunks)]), chunks

    def drop(self) -> None:
        """The verdict is in: the blocks are not needed any more."""
        self.chunks = []
        self._stretches = []


def _xcorr(near: np.ndarray, far: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """For k in 0..lags: sum near[n] far[n + lags - k] (``far`` starts ``lags`` samples earlier, so
    k is the delay of ``near`` behind ``far``), and the far end's energy over the same n. One FFT."""
    n = len(near)
    size = 1 << (len(far) - 1).bit_length()  # n + lags: no lag in 0..lags wraps round
    corr = np.fft.irfft(np.conj(np.fft.rfft(near, size)) * np.fft.rfft(far, size), size)[: lags + 1]
    energy = np.concatenate(([0.0], np.cumsum(far * far)))
    windows = energy[n : n + lags + 1] - energy[: lags + 1]  # far[j .. j + n) for j = 0 .. lags
    return corr[::-1], windows[::-1]


def correlation(near: np.ndarray, far: np.ndarray, lags: int) -> float:
    """How closely ``near`` follows ``far`` (which starts ``lags`` samples earlier) at its best
    delay: max over delays of the normalised correlation (`_xcorr`)."""
    corr, windows = _xcorr(near, far, lags)
    norm = np.sqrt(np.maximum(windows, 1e-9) * max(float(np.dot(near, near)), 1e-9))
    return float(np.max(np.abs(corr) / norm))
