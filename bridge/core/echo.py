"""Echo guard: the agent's own voice coming back down the line is not the caller talking.

Nobody cancels echo on the phone path: a speakerphone or a cheap handset returns the agent's
audio to us 40-250 ms later, 10-30 dB down, and webrtcvad calls it speech at any level. But the
bridge knows exactly what it played and when (the core paces every 20 ms frame and knows when
each one reaches the caller), so it can tell echo from a caller by loudness, the classic Geigel
double-talk test of telephone echo cancellers:

    the caller is talking  iff  level(now) > max over d in [0, D] of played(now - d) - ERL + margin

where ``played(now - d)`` is the level of what we played one echo delay ``d`` earlier, D the
longest echo path (``max_delay_ms``) and ERL the echo return loss: how much quieter the echo is
than what we played. Echo cannot beat that bound, so it never counts as speech; a caller talking
over the agent does, as long as they are louder than the loudest echo could be.

Geigel assumes ERL >= 6 dB (``assumed_erl_db`` 10 with ``margin_db`` 4 gives his threshold: half
the peak amplitude). An echo that loud then sits right on the bound: a steady tone's echo 6 dB
down, whose 20 ms frames wobble 0.1 dB about its level, passed as the caller every other frame,
paused the agent, and again after every resume (every 0.5-0.9 s, never learnt: the guard learns
only while no sound is in progress, and the canceller's cleaned line is not trusted after a
false alarm nor around a tone's edges), so a caller who spoke just after a resume waited up to
360 ms for a pause. So the loss assumed is 9 dB: the bound lies 5 dB under what played, 1 dB
over the loudest echo G.168 allows. A quiet caller over a loud agent stays under that bound, so the guard also
*learns* this call's ERL. On the true delay d*, every frame obeys ``played(t - d*) - level(t) <=
ERL``: the line holds the echo *plus* whatever else (caller, noise), never less. So a high
percentile of ``played(t - d) - level(t)`` is a lower bound on the ERL, and the smallest such
percentile over all candidate delays is one whatever the true delay: the estimate can err only
on the safe side. Double talk and noise only lower it. With no echo at all it settles at the
agent's level over the line's noise, and the guard stops masking anything the noise floor gate
would not. A louder echo (a caller switching to speakerphone) is followed within the two
seconds of history, during which soft barge-in pauses and resumes rather than interrupting.

The loss is learnt per frequency band (eight of 500 Hz). Real echo paths are not flat: a
speakerphone's small loudspeaker drops the lows, a handset's hybrid shapes the highs, so the loss
of a vowel heavy in low harmonics and of a sibilant differ by 10 dB or more. One broadband ERL
learnt from the quietest-echo frames lets the echo of every brighter frame through. So the
reference keeps our power per band and each band's ERL is learnt much as the broadband one (a
lower percentile, 75th: within a band the loss still varies), and the bound is the louder of the
broadband one and the echo those band losses predict for what just played. The bands can only
make the guard stricter; with a flat path they learn the broadband loss and change nothing.

The reference is what *plays*, not what was sent: `played` takes each frame with the time it
starts playing at the caller (the core's pacing model), and `cleared` forgets the frames a
``clear`` stopped before they played.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np

from bridge.core.bands import BANDS, frame_shares, moving_mean, power_db
from bridge.core.bands import DEFAULT_RATE as _RATE
from bridge.core.limits import within

__all__ = ["EchoConfig", "EchoGuard"]

FRAME_S: Final = 0.02
ACTIVE_DBFS: Final = -50.0  # played audio quieter than this has no echo worth guarding against
CELL_S: Final = 0.005  # the reference keeps our audio's power per 5 ms; candidate delays are as far apart
_RING: Final = 1024  # cells of reference kept: five seconds, far more than lead plus echo window
_HISTORY: Final = 100  # frames heard while the agent played, kept for learning: two seconds
_PERCENTILE: Final = 0.9
_EVERY: Final = 10  # frames between two estimates
_ALIGN_S: Final = 0.01  # once the echo's delay is known, only played audio this close to it can echo
# (half a frame: a wider window lets the echo of a loud syllable nearby hide a caller's onset, by up to
# 300 ms at 40 ms; inbound jitter that blurs the delay more than this also blurs its sharpness, and then
# every delay is used)
_SHARP_DB: Final = 3.0  # the delay is known when every delay further away explains the echo this much worse
_SILENT_DB: Final = -100.0
_EPS: Final = 1e-6
_BAND_PERCENTILE: Final = 0.75  # within a band the loss still varies; 0.5 never let echo through
# in the paths tried but held back callers over strongly reverberant echo, 0.9 let band edges through
_BAND_EVERY: Final = 5  # estimates between two per-band ones (each reads the whole history at 31 delays)
_BAND_STEP_S: Final = 0.01  # the per-band loss is learnt at candidate delays this far apart (cost)
_ONES: Final = np.ones((1, BANDS))


def _active_percentile(played: np.ndarray, heard: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Along the first axis (frames), the ``percentile`` of ``played - heard`` over the frames where
    we played something, and how many those are; both shaped as ``played`` without that axis.
    One sort for every column at once: the others are pushed below as -inf and skipped by rank."""
    active = played >= ACTIVE_DBFS
    counts = active.sum(axis=0)
    excess = np.where(active, played - heard, -np.inf)
    excess.sort(axis=0)
    rank = (len(played) - counts) + np.floor(percentile * (counts - 1)).astype(int)
    out: np.ndarray = np.take_along_axis(excess, rank[None], axis=0)[0]
    return out, counts


@dataclass(frozen=True, slots=True)
class EchoConfig:
    enabled: bool = True
    max_delay_ms: int = within(300, 0, 2_000)  # longest echo path, from the predicted play time to the echo's arrival
    assumed_erl_db: float = within(9.0, 0.0, 60.0)  # echo return loss assumed until one is learnt
    margin_db: float = within(4.0, 0.0, 30.0)  # how far above the loudest possible echo a caller must be
    learn_ms: int = within(300, 0, 10_000)  # agent audio per delay before the learnt ERL is used instead; 0: never

    def __post_init__(self) -> None:
        if not 0 <= self.max_delay_ms <= 2000:
            raise ValueError("max_delay_ms must be 0-2000")
        if self.learn_ms < 0:
            raise ValueError("learn_ms must not be negative")


class _Reference:
    """What we played, as power per band per 5 ms cell on the call's clock: cheap to add to, to
    take back after a ``clear``, and to read at every candidate delay with one moving sum. The
    cells live in a buffer that slides forward as the call goes on, keeping the last few seconds.
    A frame's band shares come from its whole 20 ms (finer cells would blur the spectrum) and
    are spread over its cells by their power.

    Frames are taken in as they are sent (a refill's at once, up to a lead ahead of their play)
    but only analysed when the reference is next read or taken back: then all those waiting go
    through one matrix product, not one small numpy call chain each."""

    __slots__ = ("_base", "_cells", "_delays", "_pending", "_rate", "_recent", "until")

    def __init__(self, delays: int, rate: int) -> None:
        self._rate = rate
        self._cells = np.zeros((BANDS, 2 * _RING))
        self._base = -_RING // 2  # the cell number of ``_cells[0]``
        self._delays = delays
        self._recent: deque[tuple[float, int, np.ndarray]] = deque(maxlen=64)  # (start, first cell, powers)
        self._pending: list[tuple[bytes, float]] = []  # frames added, not yet analysed
        self.until = float("-inf")  # when the last frame added stops playing

    def add(self, pcm: bytes, start: float) -> None:
        cells = max(1, len(pcm) // (round(self._rate * CELL_S) * 2))  # a ragged tail shorter than a cell
        self._pending.append((pcm, start))  # is left out (frames are 20 ms)
        self.until = max(self.until, start + cells * CELL_S)

    def _settle(self) -> None:
        """Analyse the frames added since the last read: their power per band per cell."""
        pending, self._pending = self._pending, []
        per = round(self._rate * CELL_S) * 2  # bytes per cell
        while pending:
            cells = max(1, len(pending[0][0]) // per)
            size = cells * per
            run = 1  # frames of the same length go through together
            while run < len(pending) and len(pending[run][0]) // per == cells:
                run += 1
            group, pending = pending[:run], pending[run:]
            x = np.frombuffer(b"".join(pcm[:size].ljust(size, b"\0") for pcm, _ in group), dtype="<i2")
            x = x.astype(np.float32).reshape(run, size // 2)
            cell_powers = np.square(x, dtype=np.float64).reshape(run, cells, -1).sum(axis=2) * (2 / per / 32768.0**2)
            powers = frame_shares(x, self._rate)[:, :, None] * cell_powers[:, None, :]  # (frames, bands, cells)
            firsts = [round(start / CELL_S) for _, start in group]
            if firsts[-1] - firsts[0] == (run - 1) * cells:  # back to back, as a refill's frames are
                self._span(firsts[0], run * cells)[:] += powers.transpose(1, 0, 2).reshape(BANDS, run * cells)
            else:
                for first, frame_powers in zip(firsts, powers, strict=True):
                    self._span(first, cells)[:] += frame_powers
            self._recent.extend((start, first, frame_powers)
                                for (_, start), first, frame_powers in zip(group, firsts, powers, strict=True))

    def take_back(self, at: float) -> None:
        """Frames due to start at ``at`` or later never play (the one in flight does)."""
        while self._pending and self._pending[-1][1] >= at - _EPS:
            self._pending.pop()
        self._settle()
        while self._recent and self._recent[-1][0] >= at - _EPS:
            _, first, powers = self._recent.pop()
            cells = self._span(first, powers.shape[1])
            cells[:] = np.maximum(cells - powers, 0.0)

    def levels(self, end: float, frame_s: float, weights: np.ndarray) -> np.ndarray:
        """Per row of band ``weights``, the weighted level (dBFS) over the caller frame ending at
        ``end``, moved back by each delay: with weights of one, our level; with the learnt
        per-band echo gains, the echo they predict.

        This runs for every caller frame while the agent talks, so it is three numpy calls on
        small fresh arrays: the bands weighted and summed, the mean over the frame's width at
        every delay (one product with a fixed 0/1 matrix, column 0 being delay 0), then dB."""
        if self._pending:
            self._settle()
        width = max(1, round(frame_s / CELL_S))
        span = width + self._delays - 1
        return power_db(weights @ self._span(round(end / CELL_S) - span, span) @ moving_mean(width, self._delays))

    def band_levels(self, ends: np.ndarray, delays: np.ndarray, frame_s: float) -> np.ndarray:
        """Our level (dBFS) over each caller frame ending at ``ends``, per band, moved back by each
        of ``delays`` (in cells): shape (frames, bands, delays). The level over every frame's width
        of the cells read is taken once; the frames and delays then only pick from it."""
        if self._pending:
            self._settle()
        width = max(1, round(frame_s / CELL_S))
        lasts = np.rint(ends / CELL_S).astype(int)[:, None] - delays[None, :]
        first = int(lasts.min()) - width
        cells = self._span(first, int(lasts.max()) - first)
        sums = np.concatenate((np.zeros((BANDS, 1)), np.cumsum(cells, axis=1)), axis=1)
        levels = power_db((sums[:, width:] - sums[:, :-width]) / width)  # column j: the frame ending at first+width+j
        picked: np.ndarray = levels[:, lasts - first - width]
        return picked.transpose(1, 0, 2)

    def _span(self, first: int, count: int) -> np.ndarray:
        """A view of cells ``first`` .. ``first + count - 1`` (all bands), sliding the buffer on if
        they lie beyond it; cells from before the buffer (more than a few seconds back) read as
        silence."""
        size = self._cells.shape[1]
        if first + count - self._base > size:
            shift = first + count - _RING - self._base
            keep = max(0, size - shift)
            self._cells[:, :keep] = self._cells[:, size - keep :]
            self._cells[:, keep:] = 0.0
            self._base += shift
        lo = first - self._base
        if lo < 0:
            return np.zeros((BANDS, count))  # never happens for live frames; a throwaway keeps it safe
        return self._cells[:, lo : lo + count]


class _Evidence:
    """Frames heard with the agent playing: our level at each delay, and what the line carried,
    in all and per band (rows without a band split hold NaN there).

    A frame's band split is only needed when the per-band losses are next estimated (every
    `_EVERY` x `_BAND_EVERY` frames once learnt), so the heard frames are kept as they come and
    split together then, in one matrix product, rather than one small chain of numpy calls each."""

    __slots__ = ("_bands", "_ends", "_levels", "_next", "_rate", "_rows", "_unsplit", "filled")

    def __init__(self, delays: int, rate: int) -> None:
        self._rate = rate
        self._rows = np.zeros((_HISTORY, delays))
        self._levels = np.zeros(_HISTORY)
        self._bands = np.full((_HISTORY, BANDS), np.nan)
        self._ends = np.zeros(_HISTORY)
        self._unsplit: dict[int, bytes] = {}  # row -> heard PCM not yet split into bands
        self._next = 0
        self.filled = 0

    def add(self, reference: np.ndarray, level_db: float, heard: bytes | None, end: float) -> None:
        self._rows[self._next] = reference
        self._levels[self._next] = max(level_db, _SILENT_DB)
        if heard is None:
            self._bands[self._next] = np.nan
            self._unsplit.pop(self._next, None)
        else:  # its band levels are written by `_split` before any are read
            self._unsplit[self._next] = heard
        self._ends[self._next] = end
        self._next = (self._next + 1) % _HISTORY
        self.filled = min(self.filled + 1, _HISTORY)

    def _split(self) -> None:
        """The band levels (dBFS) of the heard frames not yet split: the frame's level spread over
        the bands by their shares of its power."""
        while self._unsplit:
            rows = list(self._unsplit)
            size = len(self._unsplit[rows[0]])
            rows = [row for row in rows if len(self._unsplit[row]) == size]  # one frame length at a time
            x = np.frombuffer(b"".join(self._unsplit.pop(row)[: size & ~1] for row in rows), dtype="<i2")
            shares = frame_shares(x.astype(np.float32).reshape(len(rows), size // 2), self._rate)
            index = np.array(rows)
            self._bands[index] = np.maximum(self._levels[index, None] + power_db(shares), _SILENT_DB)

    def heard_bands(self) -> tuple[np.ndarray, np.ndarray]:
        """The frames that were split into bands: their ends, and their band levels (dBFS)."""
        self._split()
        bands, ends = self._bands[: self.filled], self._ends[: self.filled]
        split = ~np.isnan(bands[:, 0])
        return ends[split], bands[split]

    def clear(self) -> None:
        self._next = self.filled = 0
        self._unsplit.clear()

    def bounds(self, needed: int) -> np.ndarray | None:
        """Per delay, the 90th percentile of played-minus-heard over frames where we played
        something; None until every delay has ``needed`` such frames."""
        if not self.filled:
            return None
        out, counts = _active_percentile(self._rows[: self.filled], self._levels[: self.filled, None], _PERCENTILE)
        return out if int(counts.min()) >= max(needed, 1) else None


class EchoGuard:
    """The played reference of one call, and the level a caller frame must beat to be speech."""

    __slots__ = (
        "_band_delays", "_count", "_erl", "_evidence", "_looked", "_rate", "_reference", "_weights", "_window",
        "config", "fresh",
    )

    def __init__(self, config: EchoConfig, rate: int = _RATE) -> None:
        self.config = config
        delays = round(config.max_delay_ms / 1000 / CELL_S) + 1
        self._rate = rate
        self._reference = _Reference(delays, rate)
        self._evidence = _Evidence(delays, rate)
        self._count = 0
        self._erl: float | None = None
        # The rows `look` weighs the bands by: ours, then, once learnt, the echo's share of each (1/ERL).
        self._weights = _ONES
        self._band_delays = np.arange(0, delays, round(_BAND_STEP_S / CELL_S))
        self._window: slice | None = None  # the delays around the learnt one, or None: all of them
        self.fresh = False  # the loss in use was learnt (or handed over) since the last `doubt`
        self._looked: tuple[np.ndarray, np.ndarray | None, np.ndarray, list[float]] | None = None  # `look`'s last

    @property
    def erl_db(self) -> float:
        """The echo return loss in use: learnt once there is enough evidence, else assumed."""
        return self.config.assumed_erl_db if self._erl is None else self._erl

    @property
    def learnt(self) -> bool:
        return self._erl is not None

    def played(self, pcm: bytes, start: float) -> None:
        """One frame of ours will play from ``start`` (frames come in play order)."""
        if self.config.enabled:
            self._reference.add(pcm, start)

    def cleared(self, at: float) -> None:
        """Playback was cleared at ``at``: frames due to start then or later never play."""
        self._reference.take_back(at)

    def reference(self, end: float, frame_s: float = FRAME_S) -> np.ndarray | None:
        """Our played level (dBFS) over the caller frame ending at ``end``, shifted by each candidate
        delay; None when nothing of ours can echo into it."""
        return self.look(end, frame_s)[0]

    def look(self, end: float, frame_s: float = FRAME_S) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frame's `reference`, and the loudest echo (dBFS) each candidate delay could put
        into it by the per-band losses (None until they are learnt: the broadband bound applies)."""
        if not self.config.enabled or end - frame_s - self.config.max_delay_ms / 1000 >= self._reference.until:
            return None, None  # nothing of ours played recently enough to echo: the common, cheap case
        levels = self._reference.levels(end, frame_s, self._weights)
        tops = levels.max(axis=1).tolist()  # both rows' loudest in one call; `threshold_db` reuses them
        if tops[0] < ACTIVE_DBFS:
            return None, None
        reference, bound = levels[0], (levels[1] if len(levels) > 1 else None)
        self._looked = (reference, bound, levels, tops)
        return reference, bound

    def threshold_db(
        self, reference: np.ndarray | None, *, aligned: bool = True, bound: np.ndarray | None = None
    ) -> float | None:
        """The level a caller frame must exceed, given its `reference` (and the per-band ``bound``
        `look` gives once the bands are learnt); ``aligned``: around the learnt delay if there is
        one, else over every delay."""
        if reference is None:
            return None
        window = slice(None) if self._window is None or not aligned else self._window
        looked = self._looked
        if looked is not None and reference is looked[0] and bound is looked[1]:  # as `look` gave them
            tops = looked[3] if window == slice(None) else looked[2][:, window].max(axis=1).tolist()
        else:
            tops = [float(reference[window].max())] + ([] if bound is None else [float(bound[window].max())])
        loudest = tops[0] - self.erl_db
        if bound is not None:  # the bands can only raise the bound: a bright frame's echo is louder
            loudest = max(loudest, tops[1])
        return loudest + self.config.margin_db

    def doubt(self) -> None:
        """A sound the guard let through turned out to be nothing: if it was our echo at a delay
        that moved (a carrier's jitter buffer), the learnt delay is wrong. Bound echo over every
        delay again and re-learn from fresh evidence; the ERL itself is kept."""
        self._window = None
        self._evidence.clear()
        self._count = 0
        self.fresh = False

    def assume(self, erl_db: float) -> None:
        """The line now comes through an echo canceller, which told how far down it leaves our
        echo: use that loss at once (broadband: the residual's spectrum is not the path's), and
        learn the residual's own from fresh evidence instead of two seconds of the raw line's."""
        self._erl = erl_db
        self._weights = _ONES
        self.doubt()
        self.fresh = True

    def learn(
        self, level_db: float, reference: np.ndarray | None, heard: bytes | None = None, end: float = 0.0
    ) -> None:
        """A frame heard while no caller sound was in progress, with its `reference`; given the
        ``heard`` PCM and its ``end``, the loss is learnt per band as well."""
        if reference is None or not self.config.learn_ms:
            return
        self._evidence.add(reference, level_db, heard, end)
        self._count += 1
        if self._count % _EVERY == 0:
            self._estimate()

    def _estimate(self) -> None:
        """The lowest, over candidate delays, of the 90th percentile of played-minus-heard; and
        now and then the same per band.

        Every delay needs its evidence first: a minimum over some of them may miss the true one.
        """
        bounds = self._evidence.bounds(round(self.config.learn_ms / 1000 / FRAME_S))
        if bounds is None:
            return
        best = int(bounds.argmin())
        self._erl = float(bounds[best])
        self.fresh = True
        reach = round(_ALIGN_S / CELL_S)
        near = slice(max(0, best - reach), best + reach + 1)
        others = np.concatenate((bounds[: near.start], bounds[near.stop :]))
        sharp = not others.size or float(others.min()) - self._erl >= _SHARP_DB
        self._window = near if sharp else None
        if len(self._weights) == 1 or self._count % (_EVERY * _BAND_EVERY) == 0:
            gains = self._band_gains(needed=round(self.config.learn_ms / 1000 / FRAME_S))
            if gains is not None:
                self._weights = np.vstack((_ONES, gains))

    def _band_gains(self, needed: int) -> np.ndarray | None:
        """Per band, 1/ERL learnt much as the broadband one is: a percentile (`_BAND_PERCENTILE`) of
        played minus heard, the lowest over the candidate delays (every 10 ms). A band we seldom
        played in keeps the broadband loss."""
        ends, heard = self._evidence.heard_bands()
        if len(ends) < max(needed, 1):
            return None
        played = self._reference.band_levels(ends, self._band_delays, FRAME_S)
        bounds, counts = _active_percentile(played, heard[:, :, None], _BAND_PERCENTILE)
        erl = np.where(counts >= max(needed, 1), bounds, np.inf).min(axis=1)
        erl[~np.isfinite(erl)] = self.erl_db
        gains: np.ndarray = 10.0 ** (-erl / 10.0)
        return gains
