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

from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np

from bridge.core.bands import BANDS, frame_shares, power_db
from bridge.core.bands import DEFAULT_RATE as _RATE
from bridge.core.limits import within
from bridge.core.reference import CELL_S, KEPT_S, EchoReference

__all__ = ["EchoConfig", "EchoGuard"]

FRAME_S: Final = 0.02
ACTIVE_DBFS: Final = -50.0  # played audio quieter than this has no echo worth guarding against
_HISTORY: Final = 100  # frames heard while the agent played, kept for learning: two seconds
_PERCENTILE: Final = 0.9
_EVERY: Final = 10  # frames between two estimates
_ALIGN_S: Final = 0.01  # once the echo's delay is known, only played audio this close to it can echo
# (half a frame: a wider window lets the echo of a loud syllable nearby hide a caller's onset, by up to
# 300 ms at 40 ms; inbound jitter that blurs the delay more than this also blurs its sharpness, and then
# every delay is used)
_SHARP_DB: Final = 3.0  # the delay is known when every delay further away explains the echo this much worse
_SILENT_DB: Final = -100.0
_loudest: Final = np.maximum.reduce  # `ndarray.max` without its Python wrapper: read for every frame heard
_BAND_PERCENTILE: Final = 0.75  # within a band the loss still varies; 0.5 never let echo through
# in the paths tried but held back callers over strongly reverberant echo, 0.9 let band edges through
_BAND_EVERY: Final = 5  # estimates between two per-band ones (each reads the whole history at 31 delays)
_BAND_STEP_S: Final = 0.01  # the per-band loss is learnt at candidate delays this far apart (cost)
_QUEUED: Final = 10  # frames heard and not yet learnt from (`learn_later`) before they are read anyway
_QUEUED_S: Final = 1.0  # nor may the first of them be older than this: our cells behind it stay kept
_SPARE_S: Final = 1.0  # a per-band estimate put off is made this long before the cells it reads may go
# (the reference's buffers slide on with what is added and read: up to the playback lead ahead of now)


def _active_percentile(played: np.ndarray, heard: np.ndarray, percentile: float) -> tuple[np.ndarray, np.ndarray]:
    """Along the last axis (frames), the ``percentile`` of ``played - heard`` over the frames where
    we played something, and how many those are; both shaped as ``played`` without that axis.
    One sort for every row at once, along rows that lie contiguous in memory: the frames we were
    silent in are pushed below as -inf and skipped by rank."""
    active = played >= ACTIVE_DBFS
    counts = active.sum(axis=-1)
    excess = np.where(active, played - heard, -np.inf)
    excess.sort(axis=-1)
    frames = excess.shape[-1]
    rank = (frames - counts) + np.floor(percentile * (counts - 1)).astype(int)
    rows = excess.reshape(-1, frames)
    out: np.ndarray = rows[np.arange(len(rows)), rank.ravel()].reshape(counts.shape)
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


class _Heard(NamedTuple):
    """The heard frames a per-band estimate reads (copies, so that one put off reads them as they
    were): their rows in the evidence, ends, band levels (dBFS; NaN: not yet split), levels, PCM."""

    rows: list[int]
    ends: np.ndarray
    bands: np.ndarray
    levels: np.ndarray
    pcm: list[bytes]


class _Evidence:
    """Frames heard with the agent playing: our level at each delay (a frame per column: the
    estimate sorts each delay's row), what the line carried, when, and its PCM for the per-band
    estimate (None: not given), split into band levels when first read."""

    __slots__ = ("_bands", "_ends", "_heard", "_levels", "_next", "_rate", "_rows", "filled")

    def __init__(self, delays: int, rate: int) -> None:
        self._rate = rate
        self._rows = np.zeros((delays, _HISTORY))
        self._levels = np.zeros(_HISTORY)
        self._ends = np.zeros(_HISTORY)
        self._heard: list[bytes | None] = [None] * _HISTORY
        self._bands = np.full((_HISTORY, BANDS), np.nan)
        self._next = 0
        self.filled = 0

    def add(self, reference: np.ndarray, level_db: float, heard: bytes | None, end: float) -> None:
        self._rows[:, self._next] = reference
        self._levels[self._next] = max(level_db, _SILENT_DB)
        self._heard[self._next] = heard
        self._bands[self._next] = np.nan
        self._ends[self._next] = end
        self._next = (self._next + 1) % _HISTORY
        self.filled = min(self.filled + 1, _HISTORY)

    def add_many(self, references: np.ndarray, levels: list[float], heard: list[bytes | None],
                 ends: list[float]) -> None:
        """`add` for several frames at once (a row of ``references`` each), fewer than `_HISTORY`."""
        count = len(levels)
        slots = (self._next + np.arange(count)) % _HISTORY
        self._rows[:, slots] = references.T
        self._levels[slots] = np.maximum(levels, _SILENT_DB)
        self._bands[slots] = np.nan
        self._ends[slots] = ends
        for slot, pcm in zip(slots.tolist(), heard, strict=True):
            self._heard[slot] = pcm
        self._next = (self._next + count) % _HISTORY
        self.filled = min(self.filled + count, _HISTORY)

    def heard(self) -> _Heard:
        """The frames given with their PCM."""
        rows = [row for row in range(self.filled) if self._heard[row] is not None]
        pcm = [heard for heard in (self._heard[row] for row in rows) if heard is not None]
        return _Heard(rows, self._ends[rows], self._bands[rows], self._levels[rows], pcm)

    def split(self, heard: _Heard) -> np.ndarray:
        """The band levels of ``heard``: a frame's level spread over the bands by their shares of
        its power, one matrix product per frame length for the frames not split before; kept for
        the next estimate where the evidence still holds the frame."""
        bands = heard.bands
        todo: list[int] = np.flatnonzero(np.isnan(bands[:, 0])).tolist()
        sizes = [len(heard.pcm[i]) & ~1 for i in todo]
        for size in set(sizes):
            same = [i for i, n in zip(todo, sizes, strict=True) if n == size]
            x = np.frombuffer(b"".join(heard.pcm[i][:size] for i in same), dtype="<i2")
            shares = frame_shares(x.astype(np.float32).reshape(len(same), size // 2), self._rate)
            bands[same] = np.maximum(heard.levels[same, None] + power_db(shares), _SILENT_DB)
        for i in todo:
            row = heard.rows[i]
            if self._heard[row] is heard.pcm[i] and self._ends[row] == heard.ends[i]:
                self._bands[row] = bands[i]
        return bands

    def clear(self) -> None:
        self._next = self.filled = 0

    def bounds(self, needed: int) -> np.ndarray | None:
        """Per delay, the 90th percentile of played-minus-heard over frames where we played
        something; None until every delay has ``needed`` such frames."""
        if not self.filled:
            return None
        out, counts = _active_percentile(self._rows[:, : self.filled], self._levels[: self.filled], _PERCENTILE)
        return out if int(counts.min()) >= max(needed, 1) else None


class EchoGuard:
    """The played reference of one call, and the level a caller frame must beat to be speech.

    Per caller frame heard while the agent talks it keeps our level at every delay as evidence
    (`learn_later`: read ten frames at a time, in one gather); the per-band bound (`bound`) and the
    threshold are read only for a frame whose verdict hangs on them, and a per-band estimate is put
    off until the bound is next read (or the cells it reads are about to go), on the evidence as it
    was when it fell due. On a call without echo the line is seldom speech-like while the agent
    talks, so most calls never pay for the bands per frame, and none decides differently for it."""

    __slots__ = (
        "_band_delays", "_count", "_due", "_erl", "_evidence", "_fresh", "_gains", "_looked", "_queued", "_rate",
        "_reference", "_window", "config",
    )

    def __init__(self, config: EchoConfig, rate: int = _RATE) -> None:
        self.config = config
        delays = round(config.max_delay_ms / 1000 / CELL_S) + 1
        self._rate = rate
        self._reference = EchoReference(delays, rate)
        self._evidence = _Evidence(delays, rate)
        self._count = 0
        self._erl: float | None = None
        self._gains: np.ndarray | None = None  # once learnt, the echo's share of our power per band (1/ERL)
        # A per-band estimate fallen due and put off: the earliest time it reads our cells at, the heard
        # frames, and the broadband loss then.
        self._due: tuple[float, _Heard, float] | None = None
        self._band_delays = np.arange(0, delays, round(_BAND_STEP_S / CELL_S))
        self._window: slice | None = None  # the delays around the learnt one, or None: all of them
        self._fresh = False  # the loss in use was learnt (or handed over) since the last `doubt`
        # Frames heard while no caller sound was in progress, not yet learnt from (`learn_later`):
        # (level, PCM, end, frame width).
        self._queued: list[tuple[float, bytes | None, float, float]] = []
        self._looked: tuple[np.ndarray, float] | None = None  # `reference`'s last, and its loudest

    @property
    def erl_db(self) -> float:
        """The echo return loss in use: learnt once there is enough evidence, else assumed."""
        if self._queued:
            self._learn_queued()
        return self.config.assumed_erl_db if self._erl is None else self._erl

    @property
    def learnt(self) -> bool:
        if self._queued:
            self._learn_queued()
        return self._erl is not None

    @property
    def fresh(self) -> bool:
        """The loss in use was learnt (or handed over) since the last `doubt`."""
        if self._queued:
            self._learn_queued()
        return self._fresh

    def played(self, pcm: bytes, start: float) -> None:
        """One frame of ours will play from ``start`` (frames come in play order)."""
        if self.config.enabled:
            if self._queued and start < self._queued[-1][2] + CELL_S:  # it plays into a frame heard:
                self._learn_queued()  # (only a playback restarting at once) which reads our cells as they were
            self._overdue(start)
            self._reference.add(pcm, start)

    def cleared(self, at: float) -> None:
        """Playback was cleared at ``at``: frames due to start then or later never play."""
        if self._queued and at < self._queued[-1][2] + CELL_S:  # frames heard read what played before
            self._learn_queued()
        self._reference.take_back(at)

    def reference(self, end: float, frame_s: float = FRAME_S) -> np.ndarray | None:
        """Our played level (dBFS) over the caller frame ending at ``end``, shifted by each candidate
        delay; None when nothing of ours can echo into it."""
        if not self.config.enabled or end - frame_s - self.config.max_delay_ms / 1000 >= self._reference.until:
            return None  # nothing of ours played recently enough to echo: the common, cheap case
        self._overdue(end)
        levels = self._reference.levels(end, frame_s)
        top = float(_loudest(levels))
        if top < ACTIVE_DBFS:
            return None
        self._looked = (levels, top)  # `threshold_db` reuses its loudest
        return levels

    def bound(self, end: float, frame_s: float = FRAME_S) -> np.ndarray | None:
        """The loudest echo (dBFS) each candidate delay could put into the caller frame ending at
        ``end`` by the per-band losses; None until they are learnt (the broadband bound applies)."""
        if self._queued:
            self._learn_queued()
        if self._due is not None:
            self._band_gains()
        return None if self._gains is None else self._reference.echo(end, frame_s, self._gains)

    def threshold_db(
        self, reference: np.ndarray | None, *, aligned: bool = True, bound: np.ndarray | None = None
    ) -> float | None:
        """The level a caller frame must exceed, given its `reference` (and its `bound` once the
        bands are learnt); ``aligned``: around the learnt delay if there is one, else over every
        delay."""
        if reference is None:
            return None
        if self._queued:
            self._learn_queued()
        window = slice(None) if self._window is None or not aligned else self._window
        looked = self._looked
        if looked is not None and reference is looked[0] and window == slice(None):  # as `reference` gave it
            top = looked[1]
        else:
            top = float(_loudest(reference[window]))
        loudest = top - self.erl_db
        if bound is not None:  # the bands can only raise the bound: a bright frame's echo is louder
            loudest = max(loudest, float(_loudest(bound[window])))
        return loudest + self.config.margin_db

    def doubt(self) -> None:
        """A sound the guard let through turned out to be nothing: if it was our echo at a delay
        that moved (a carrier's jitter buffer), the learnt delay is wrong. Bound echo over every
        delay again and re-learn from fresh evidence; the ERL itself is kept."""
        if self._queued:
            self._learn_queued()
        self._window = None
        self._evidence.clear()
        self._count = 0
        self._fresh = False

    def assume(self, erl_db: float) -> None:
        """The line now comes through an echo canceller, which told how far down it leaves our
        echo: use that loss at once (broadband: the residual's spectrum is not the path's), and
        learn the residual's own from fresh evidence instead of two seconds of the raw line's."""
        if self._queued:
            self._learn_queued()
        self._erl = erl_db
        self._gains = self._due = None
        self.doubt()
        self._fresh = True

    def learn(
        self, level_db: float, reference: np.ndarray | None, heard: bytes | None = None, end: float = 0.0
    ) -> None:
        """A frame heard while no caller sound was in progress, with its `reference`; given the
        ``heard`` PCM and its ``end``, the loss is learnt per band as well."""
        if self._queued:
            self._learn_queued()
        if reference is not None and self.config.learn_ms:
            self._add(reference, level_db, heard, end)

    def learn_later(self, level_db: float, end: float, heard: bytes | None = None, frame_s: float = FRAME_S) -> None:
        """`learn` from the frame ending at ``end``, its `reference` read when next needed: before
        anything learnt is read, before our cells change, or a few frames on. A call heard while
        its agent talks learns from nearly every frame but reads its threshold seldom (only a
        frame it could veto), so the frames' references are read a refill's worth at a time, in
        one gather (`EchoReference.levels_at`), and nothing decides differently for it."""
        if not self.config.enabled or not self.config.learn_ms:
            return
        queued = self._queued
        if queued and (len(queued) >= _QUEUED or end - queued[0][2] > _QUEUED_S or frame_s != queued[0][3]):
            self._learn_queued()
        self._queued.append((level_db, heard, end, frame_s))

    def _learn_queued(self) -> None:
        """Learn from the queued frames, in the order heard, as `learn` would have then: a frame
        with nothing of ours loud enough to echo into it teaches nothing."""
        queued, self._queued = self._queued, []
        reach = self.config.max_delay_ms / 1000
        until = self._reference.until
        frame_s = queued[0][3]  # one width: `learn_later` learns from the queue before another comes
        near = [frame for frame in queued if frame[2] - frame_s - reach < until]
        if not near:
            return
        rows = self._reference.levels_at([frame[2] for frame in near], frame_s)
        active = (_loudest(rows, axis=1) >= ACTIVE_DBFS).tolist()
        learnt = [frame for frame, loud in zip(near, active, strict=True) if loud]
        if not learnt:
            return
        rows = rows[np.flatnonzero(active)]
        self._overdue(learnt[-1][2])
        done = 0
        while done < len(learnt):  # an estimate falls due every `_EVERY` frames learnt, as with `learn`
            take = min(len(learnt) - done, _EVERY - self._count % _EVERY)
            part = learnt[done : done + take]
            self._evidence.add_many(rows[done : done + take], [f[0] for f in part], [f[1] for f in part],
                                    [f[2] for f in part])
            done += take
            self._count += take
            if self._count % _EVERY == 0:
                self._estimate()

    def _add(self, reference: np.ndarray, level_db: float, heard: bytes | None, end: float) -> None:
        self._evidence.add(reference, level_db, heard, end)
        self._count += 1
        if self._count % _EVERY == 0:
            self._estimate()

    def _estimate(self) -> None:
        """The lowest, over candidate delays, of the 90th percentile of played-minus-heard; and
        now and then the same per band (put off: `_band_gains`).

        Every delay needs its evidence first: a minimum over some of them may miss the true one.
        """
        needed = max(round(self.config.learn_ms / 1000 / FRAME_S), 1)
        bounds = self._evidence.bounds(needed)
        if bounds is None:
            return
        best = int(bounds.argmin())
        self._erl = float(bounds[best])
        self._fresh = True
        reach = round(_ALIGN_S / CELL_S)
        near = slice(max(0, best - reach), best + reach + 1)
        others = np.concatenate((bounds[: near.start], bounds[near.stop :]))
        sharp = not others.size or float(others.min()) - self._erl >= _SHARP_DB
        self._window = near if sharp else None
        if (self._gains is None and self._due is None) or self._count % (_EVERY * _BAND_EVERY) == 0:
            heard = self._evidence.heard()
            if len(heard.rows) >= needed:  # else the band losses stay as they are
                oldest = float(heard.ends.min()) - self.config.max_delay_ms / 1000 - FRAME_S
                self._due = (oldest, heard, self._erl)

    def _overdue(self, now: float) -> None:
        """Make a per-band estimate put off before the cells it reads go (`KEPT_S`)."""
        if self._due is not None and now - self._due[0] > KEPT_S - _SPARE_S:
            self._band_gains()

    def _band_gains(self) -> None:
        """The per-band estimate that fell due: per band, 1/ERL learnt much as the broadband one is,
        a percentile (`_BAND_PERCENTILE`) of played minus heard, the lowest over the candidate
        delays (every 10 ms). A band we seldom played in keeps the broadband loss of the time.
        Our cells played by then do not change after (frames are added from now on, and a
        ``clear`` takes back only what has not yet played), so putting it off changes nothing."""
        assert self._due is not None
        _, heard, erl_db = self._due
        self._due = None
        needed = max(round(self.config.learn_ms / 1000 / FRAME_S), 1)
        played = self._reference.band_levels(heard.ends, self._band_delays, FRAME_S)
        bands = self._evidence.split(heard)
        bounds, counts = _active_percentile(played, bands.T[:, None, :], _BAND_PERCENTILE)
        erl = np.where(counts >= needed, bounds, np.inf).min(axis=1)
        erl[~np.isfinite(erl)] = erl_db
        self._gains = 10.0 ** (-erl / 10.0)
