"""The echo guard's reference: what we played, as power per 5 ms cell on the call's clock.

The echo guard (``bridge.core.echo``) reads it for every caller frame heard while the agent
talks: our level over the frame's width, moved back by every candidate echo delay. Only now
and then does it need the same per frequency band (a per-band estimate of the echo loss, or a
frame whose verdict hangs on the per-band bound), so the two are kept apart and each is worked
out only when read:

* the power per cell over all bands, when a caller frame next reads our level (one
  ``np.square`` and a sum over a refill's frames), and with it the level over a frame's width
  ending at each cell: a caller frame 20 ms on reads nearly the same windows again, so its
  levels at every delay are then a slice of those, read backwards;
* the power per cell per band, when the per-band echo is next needed: the frames' band shares
  (`bands.frame_shares`: a matrix product over all those waiting) spread over their cells by
  their power. On a call without echo that is seldom, so most calls never pay for it per frame;
  where the bands were read since the last refill (a call with echo reads them for most frames),
  a refill is split into bands in the same pass as its power.

Frames are taken in as they are sent (a refill's at once, up to a lead ahead of their play),
and ``take_back`` forgets those a ``clear`` stopped before they played. The cells live in
buffers that slide forward as the call goes on, keeping the last few seconds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final

import numpy as np

from bridge.core.bands import BANDS, frame_shares, moving_mean, power_db

__all__ = ["CELL_S", "KEPT_S", "EchoReference"]

CELL_S: Final = 0.005  # the reference keeps our audio's power per 5 ms; candidate delays are as far apart
_RING: Final = 2048  # cells kept: ten seconds, far more than lead plus echo window plus the guard's history,
# so that a per-band estimate put off (`EchoGuard`) outlives the pause of a caller's turn and is superseded
# rather than made: one made before its cells went cost about 1.6 ms, several times a call
_SLACK: Final = 512  # cells the buffers hold past those kept, so that they slide (copying the kept) seldom
_TAKE_BACK: Final = 64  # frames kept for `take_back` in any case, beyond what a lead of a second can queue
_TAKE_BACK_MAX: Final = 640  # at most, while no caller frame is read: the longest lead allowed (10 s), and more
_HEARD_SLACK_S: Final = 1.0  # a frame that started this long before the last one heard can never be taken back
KEPT_S: Final = _RING * CELL_S  # cells this far behind the latest one added or read are gone
_EPS: Final = 1e-6
_SILENT_DB: Final = -100.0  # `power_db` of silence
_FRESH: Final = (2**62, -(2**62))  # no cell's level out of date

_Frames = list[tuple[bytes, float]]  # (PCM, when it starts playing)


class EchoReference:
    """What we played, per cell, in all and per band: cheap to add to, to take back after a
    ``clear``, and to read at every candidate delay with one moving sum.

    A frame's band shares come from its whole 20 ms (finer cells would blur the spectrum) and
    are spread over its cells by their power."""

    __slots__ = ("_banded", "_bands", "_base", "_delays", "_heard", "_hot", "_level", "_pending", "_per", "_power",
                 "_rate", "_recent", "_stale", "_unbanded", "_width", "until")

    def __init__(self, delays: int, rate: int) -> None:
        self._rate = rate
        self._per = round(rate * CELL_S) * 2  # bytes per cell
        self._delays = delays
        self._power = np.zeros(_RING + _SLACK)  # all bands
        self._level = np.full(_RING + _SLACK, _SILENT_DB)  # the level (dBFS) over the `_width` cells ending at each
        self._width = 0
        self._stale = _FRESH  # the cells (numbers, from, to) whose `_level` is out of date
        self._bands = np.zeros((BANDS, _RING + _SLACK))
        self._base = -_RING // 2  # the cell number of column 0 of both
        self._pending: _Frames = []  # frames added, not yet in `_power`
        self._unbanded: deque[tuple[bytes, float]] = deque()  # in `_power`, not yet in `_bands`
        self._hot = False  # the bands were read since the last frames were analysed
        # The frames last taken in, for `take_back`: (start, first cell, power per cell [per band]); those that
        # may not have played yet, whatever the lead (`_place`).
        self._recent: deque[tuple[float, int, np.ndarray]] = deque(maxlen=_TAKE_BACK_MAX)
        self._banded: deque[tuple[float, int, np.ndarray]] = deque(maxlen=_TAKE_BACK_MAX)
        self._heard = float("-inf")  # the end of the latest caller frame read: our frames before it have played
        self.until = float("-inf")  # when the last frame added stops playing

    def add(self, pcm: bytes, start: float) -> None:
        cells = max(1, len(pcm) // self._per)  # a ragged tail shorter than a cell is left out (frames are 20 ms)
        self._pending.append((pcm, start))
        self.until = max(self.until, start + cells * CELL_S)

    def take_back(self, at: float) -> None:
        """Frames due to start at ``at`` or later never play (the one in flight does)."""
        while self._pending and self._pending[-1][1] >= at - _EPS:
            self._pending.pop()
        self._settle()
        while self._unbanded and self._unbanded[-1][1] >= at - _EPS:
            self._unbanded.pop()  # never in the bands: nothing to take out of them
        for recent, cells in ((self._recent, self._power), (self._banded, self._bands)):
            while recent and recent[-1][0] >= at - _EPS:
                _, first, powers = recent.pop()
                lo = self._column(first, powers.shape[-1])
                if lo is not None:
                    span = cells[..., lo : lo + powers.shape[-1]]
                    span[...] = np.maximum(span - powers, 0.0)
                    if cells is self._power:
                        self._changed(first, powers.shape[-1])

    def levels(self, end: float, frame_s: float) -> np.ndarray:
        """Our level (dBFS) over the caller frame ending at ``end``, moved back by each delay
        (index 0: delay 0): per caller frame while the agent talks, a copy of the kept levels
        of the windows ending one cell before it, two cells, ..., read backwards."""
        width, span = self._reading(frame_s)
        self._heard = max(self._heard, end)
        lo = self._column(round(end / CELL_S) - span, span)
        if lo is None:
            return np.full(self._delays, _SILENT_DB)
        if self._stale[0] < self._stale[1]:
            self._refresh()
        lo += width - 1  # the window ending at the first cell read
        return self._level[lo + self._delays - 1 : lo - 1 if lo else None : -1].copy()

    def levels_at(self, ends: list[float], frame_s: float) -> np.ndarray:
        """`levels` for several caller frames at once, a row per frame (in the order of ``ends``,
        which rise): one gather instead of a copy per frame, for the frames the echo guard learns
        from after they were heard (`EchoGuard.learn_later`). Our cells up to a frame's end do
        not change once it is heard, so reading them later reads what the frame met."""
        _, span = self._reading(frame_s)
        self._heard = max(self._heard, ends[-1])
        firsts = [round(end / CELL_S) - span for end in ends]
        self._column(firsts[-1], span)  # the buffers slid on to the latest frame's cells, if need be
        if self._stale[0] < self._stale[1]:
            self._refresh()
        lows = np.array(firsts) - self._base  # each frame's first cell read; below 0: no longer kept
        index = (lows + span - 1)[:, None] - np.arange(self._delays)[None, :]  # delay 0 first, as `levels`
        rows: np.ndarray = self._level[np.maximum(index, 0)]
        rows[lows < 0] = _SILENT_DB
        return rows

    def _reading(self, frame_s: float) -> tuple[int, int]:
        """Before our level is read over caller frames ``frame_s`` wide: the frames added since are
        in the cells; the frame's width in cells, and how many cells a read spans at every delay."""
        if self._pending:
            self._settle()
        width = max(1, round(frame_s / CELL_S))
        if width != self._width:  # the first read (a guard reads one width): every level is out of date
            self._width, self._stale = width, (self._base, self._base + len(self._power))
        return width, width + self._delays - 1

    def _refresh(self) -> None:
        """The level over `_width` cells ending at each cell whose window changed."""
        width, (first, last) = self._width, self._stale
        self._stale = _FRESH
        lo, hi = max(first - self._base, width - 1), min(last - self._base, len(self._power))
        if lo < hi:
            power = self._power
            means = power[lo:hi].copy()
            for k in range(1, width):
                means += power[lo - k : hi - k]
            means *= 1.0 / width
            self._level[lo:hi] = power_db(means)

    def _changed(self, first: int, count: int) -> None:
        """Cells ``first`` .. ``first + count - 1`` of `_power` changed, and so did every window holding one."""
        lo, hi = self._stale
        self._stale = (min(lo, first), max(hi, first + count + self._width - 1))

    def echo(self, end: float, frame_s: float, gains: np.ndarray) -> np.ndarray:
        """The level (dBFS) per-band echo ``gains`` predict over the caller frame ending at ``end``,
        moved back by each delay, as `levels`."""
        self._band()
        self._heard = max(self._heard, end)
        width = max(1, round(frame_s / CELL_S))
        span = width + self._delays - 1
        lo = self._column(round(end / CELL_S) - span, span)
        cells = np.zeros((BANDS, span)) if lo is None else self._bands[:, lo : lo + span]
        return power_db(gains @ cells @ moving_mean(width, self._delays))

    def band_levels(self, ends: np.ndarray, delays: np.ndarray, frame_s: float) -> np.ndarray:
        """Our level (dBFS) over each caller frame ending at ``ends``, per band, moved back by each
        of ``delays`` (in cells): shape (bands, delays, frames). The level over every frame's width
        of the cells read is taken once; the frames and delays then only pick from it. A frame
        whose cells are no longer kept (heard before the agent fell silent for seconds) reads as
        silence on its own, so that it counts as a frame we played nothing in, not all of them."""
        self._band()
        self._heard = max(self._heard, float(ends.max()))
        width = max(1, round(frame_s / CELL_S))
        lasts = np.rint(ends / CELL_S).astype(int)[None, :] - delays[:, None]
        last = int(lasts.max())
        self._column(last - 1, 1)  # the buffers slid on to the latest cell read, if need be
        gone = lasts - width < self._base  # cells no longer kept: read as silence
        if gone.all():
            return np.full((BANDS, *lasts.shape), _SILENT_DB)
        lasts = np.where(gone, last, lasts)  # a stand-in, blanked below
        first = int(lasts.min()) - width
        lo = first - self._base
        cells = self._bands[:, lo : lo + last - first]
        sums = np.concatenate((np.zeros((BANDS, 1)), np.cumsum(cells, axis=1)), axis=1)
        levels = power_db((sums[:, width:] - sums[:, :-width]) / width)  # column j: the frame ending at first+width+j
        picked: np.ndarray = levels[:, lasts - first - width]
        picked[:, gone] = _SILENT_DB
        return picked

    def _settle(self) -> None:
        """The power per cell of the frames added since the last read."""
        pending, self._pending = self._pending, []
        banding, self._hot = self._hot and not self._unbanded, False
        for group, x, cell_powers in self._analysed(pending):
            self._changed(*self._place(self._power, group, cell_powers, self._recent))
            if banding:
                self._split(group, x, cell_powers)
        if banding:
            return
        self._unbanded.extend(pending)
        oldest = self._base * CELL_S  # frames before the buffers can never be read in the bands
        while self._unbanded and self._unbanded[0][1] < oldest:
            self._unbanded.popleft()

    def _band(self) -> None:
        """The power per cell per band of the frames not yet split into bands."""
        if self._pending:
            self._settle()
        self._hot = True
        if self._unbanded:
            unbanded, self._unbanded = list(self._unbanded), deque()
            for group, x, cell_powers in self._analysed(unbanded):
                self._split(group, x, cell_powers)

    def _split(self, group: _Frames, x: np.ndarray, cell_powers: np.ndarray) -> None:
        """A run of frames (`_analysed`) into the bands."""
        shares = frame_shares(x.astype(np.float32), self._rate)
        self._place(self._bands, group, shares[:, :, None] * cell_powers[:, None, :], self._banded)

    def _analysed(self, frames: _Frames) -> Iterator[tuple[_Frames, np.ndarray, np.ndarray]]:
        """Runs of frames of one length, each with its samples (int16, a row per frame) and its
        power per cell (a row per frame)."""
        per = self._per
        while frames:
            cells = max(1, len(frames[0][0]) // per)
            size = cells * per
            run = 1  # frames of the same length go through together
            while run < len(frames) and len(frames[run][0]) // per == cells:
                run += 1
            group, frames = frames[:run], frames[run:]
            x = np.frombuffer(b"".join(pcm[:size].ljust(size, b"\0") for pcm, _ in group), dtype="<i2")
            x = x.reshape(run, size // 2)
            cell_powers = np.square(x, dtype=np.float64).reshape(run, cells, -1).sum(axis=2) * (2 / per / 32768.0**2)
            yield group, x, cell_powers

    def _place(self, cells: np.ndarray, group: _Frames, powers: np.ndarray,
               recent: deque[tuple[float, int, np.ndarray]]) -> tuple[int, int]:
        """Add a run of frames' ``powers`` (a row, or a bands x cells block, per frame) to ``cells``
        where they play, and keep them for `take_back`; the first cell and how many it spans."""
        count, run = powers.shape[-1], len(group)
        firsts = [round(start / CELL_S) for _, start in group]
        if firsts[-1] - firsts[0] == (run - 1) * count:  # back to back, as a refill's frames are
            lo = self._column(firsts[0], run * count)
            if lo is not None:
                if powers.ndim == 2:
                    cells[lo : lo + run * count] += powers.reshape(run * count)
                else:
                    cells[:, lo : lo + run * count] += powers.transpose(1, 0, 2).reshape(BANDS, run * count)
        else:
            for first, frame_powers in zip(firsts, powers, strict=True):
                lo = self._column(first, count)
                if lo is not None:
                    cells[..., lo : lo + count] += frame_powers
        recent.extend((start, first, frame_powers)
                      for (_, start), first, frame_powers in zip(group, firsts, powers, strict=True))
        if len(recent) > _TAKE_BACK:  # a lead of more than a second: keep every frame that may not have played
            played = self._heard - _HEARD_SLACK_S
            while len(recent) > _TAKE_BACK and recent[0][0] < played:
                recent.popleft()
        return firsts[0], firsts[-1] + count - firsts[0]

    def _column(self, first: int, count: int) -> int | None:
        """The buffers' column of cell ``first``, sliding them on if cells up to ``first + count - 1``
        lie beyond them; None if ``first`` lies before them (more than a few seconds back: never
        for a live frame; such cells read as silence)."""
        size = len(self._power)
        if first + count - self._base > size:
            shift = first + count - _RING - self._base
            keep = max(0, size - shift)
            for cells, silent in ((self._power, 0.0), (self._bands, 0.0), (self._level, _SILENT_DB)):
                cells[..., :keep] = cells[..., size - keep :]
                cells[..., keep:] = silent
            self._base += shift
            self._changed(self._base + keep, 0)  # the first windows past the cells kept hold some of them
        lo = first - self._base
        return lo if lo >= 0 else None
