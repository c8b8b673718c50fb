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
the peak amplitude). A quiet caller over a loud agent stays under that bound, so the guard also
*learns* this call's ERL. On the true delay d*, every frame obeys ``played(t - d*) - level(t) <=
ERL``: the line holds the echo *plus* whatever else (caller, noise), never less. So a high
percentile of ``played(t - d) - level(t)`` is a lower bound on the ERL, and the smallest such
percentile over all candidate delays is one whatever the true delay: the estimate can err only
on the safe side. Double talk and noise only lower it. With no echo at all it settles at the
agent's level over the line's noise, and the guard stops masking anything the noise floor gate
would not. A louder echo (a caller switching to speakerphone) is followed within the two
seconds of history, during which soft barge-in pauses and resumes rather than interrupting.

The reference is what *plays*, not what was sent: `played` takes each frame with the time it
starts playing at the caller (the core's pacing model), and `cleared` forgets the frames a
``clear`` stopped before they played.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np

from bridge.audio import pcm_power

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


@dataclass(frozen=True, slots=True)
class EchoConfig:
    enabled: bool = True
    max_delay_ms: int = 300  # longest echo path, from the play time the core predicts to the echo's arrival
    assumed_erl_db: float = 10.0  # echo return loss assumed until one is learnt
    margin_db: float = 4.0  # how far above the loudest possible echo a caller must be
    learn_ms: int = 300  # agent audio heard at every delay before the learnt ERL replaces the assumed one; 0: never

    def __post_init__(self) -> None:
        if not 0 <= self.max_delay_ms <= 2000:
            raise ValueError("max_delay_ms must be 0-2000")
        if self.learn_ms < 0:
            raise ValueError("learn_ms must not be negative")


class _Reference:
    """What we played, as power per 5 ms cell on the call's clock: cheap to add to, to take back
    after a ``clear``, and to read at every candidate delay with one cumulative sum. The cells live
    in a buffer that slides forward as the call goes on, keeping the last few seconds."""

    __slots__ = ("_base", "_cells", "_delays", "_ones", "_recent", "until")

    def __init__(self, delays: int) -> None:
        self._cells = np.zeros(2 * _RING)
        self._base = -_RING // 2  # the cell number of ``_cells[0]``
        self._delays = delays
        self._ones: dict[int, np.ndarray] = {}  # moving-average kernels by width in cells
        self._recent: deque[tuple[float, int, np.ndarray]] = deque(maxlen=64)  # (start, first cell, powers)
        self.until = float("-inf")  # when the last frame added stops playing

    def add(self, pcm: bytes, start: float) -> None:
        per = round(8000 * CELL_S) * 2  # bytes per cell
        cells = max(1, len(pcm) // per)  # a ragged tail shorter than a cell is left out (frames are 20 ms)
        view = memoryview(pcm)
        powers = np.array([pcm_power(view[i * per : (i + 1) * per]) for i in range(cells)])
        first = round(start / CELL_S)
        self._span(first, cells)[:] += powers
        self._recent.append((start, first, powers))
        self.until = max(self.until, start + cells * CELL_S)

    def take_back(self, at: float) -> None:
        """Frames due to start at ``at`` or later never play (the one in flight does)."""
        while self._recent and self._recent[-1][0] >= at - _EPS:
            _, first, powers = self._recent.pop()
            cells = self._span(first, len(powers))
            cells[:] = np.maximum(cells - powers, 0.0)

    def levels(self, end: float, frame_s: float) -> np.ndarray:
        """Our level (dBFS) over the caller frame ending at ``end``, moved back by each delay.

        This runs for every caller frame while the agent talks, so it is a handful of numpy calls
        on one small fresh array: a moving sum over the frame's width (reversed, so that index 0
        is delay 0), then dB in place."""
        last = round(end / CELL_S)
        width = max(1, round(frame_s / CELL_S))
        span = width + self._delays - 1
        if width not in self._ones:
            self._ones[width] = np.full(width, 1.0 / width)
        out: np.ndarray = np.convolve(self._span(last - span, span), self._ones[width], "valid")[::-1].copy()
        np.maximum(out, 1e-10, out=out)
        np.log10(out, out=out)
        out *= 10.0
        return out

    def _span(self, first: int, count: int) -> np.ndarray:
        """A view of cells ``first`` .. ``first + count - 1``, sliding the buffer on if they lie
        beyond it; cells from before the buffer (more than a few seconds back) read as silence."""
        if first + count - self._base > len(self._cells):
            shift = first + count - _RING - self._base
            keep = max(0, len(self._cells) - shift)
            self._cells[:keep] = self._cells[len(self._cells) - keep :]
            self._cells[keep:] = 0.0
            self._base += shift
        lo = first - self._base
        if lo < 0:
            return np.zeros(count)  # never happens for live frames; a throwaway keeps it safe
        return self._cells[lo : lo + count]


class _Evidence:
    """Frames heard with the agent playing: our level at each delay, and what the line carried."""

    __slots__ = ("_levels", "_next", "_rows", "filled")

    def __init__(self, delays: int) -> None:
        self._rows = np.zeros((_HISTORY, delays))
        self._levels = np.zeros(_HISTORY)
        self._next = 0
        self.filled = 0

    def add(self, reference: np.ndarray, level_db: float) -> None:
        self._rows[self._next] = reference
        self._levels[self._next] = max(level_db, _SILENT_DB)
        self._next = (self._next + 1) % _HISTORY
        self.filled = min(self.filled + 1, _HISTORY)

    def clear(self) -> None:
        self._next = self.filled = 0

    def bounds(self, needed: int) -> np.ndarray | None:
        """Per delay, the 90th percentile of played-minus-heard over frames where we played
        something; None until every delay has ``needed`` such frames."""
        rows, levels = self._rows[: self.filled], self._levels[: self.filled]
        active = rows >= ACTIVE_DBFS
        counts = active.sum(axis=0)
        if not self.filled or int(counts.min()) < max(needed, 1):
            return None
        excess = np.sort(np.where(active, rows - levels[:, None], -np.inf), axis=0)
        rank = (self.filled - counts) + np.floor(_PERCENTILE * (counts - 1)).astype(int)
        out: np.ndarray = excess[rank, np.arange(rows.shape[1])]
        return out


class EchoGuard:
    """The played reference of one call, and the level a caller frame must beat to be speech."""

    __slots__ = ("_count", "_erl", "_evidence", "_reference", "_window", "config")

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        delays = round(config.max_delay_ms / 1000 / CELL_S) + 1
        self._reference = _Reference(delays)
        self._evidence = _Evidence(delays)
        self._count = 0
        self._erl: float | None = None
        self._window: slice | None = None  # the delays around the learnt one, or None: all of them

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
        if not self.config.enabled or end - frame_s - self.config.max_delay_ms / 1000 >= self._reference.until:
            return None  # nothing of ours played recently enough to echo: the common, cheap case
        levels = self._reference.levels(end, frame_s)
        return levels if float(levels.max()) >= ACTIVE_DBFS else None

    def threshold_db(self, reference: np.ndarray | None, *, aligned: bool = True) -> float | None:
        """The level a caller frame must exceed, given its `reference`; ``aligned``: around the
        learnt delay if there is one, else over every delay."""
        if reference is None:
            return None
        near = reference if self._window is None or not aligned else reference[self._window]
        return float(near.max()) - self.erl_db + self.config.margin_db

    def doubt(self) -> None:
        """A sound the guard let through turned out to be nothing: if it was our echo at a delay
        that moved (a carrier's jitter buffer), the learnt delay is wrong. Bound echo over every
        delay again and re-learn from fresh evidence; the ERL itself is kept."""
        self._window = None
        self._evidence.clear()
        self._count = 0

    def learn(self, level_db: float, reference: np.ndarray | None) -> None:
        """A frame heard while no caller sound was in progress, with its `reference`."""
        if reference is None or not self.config.learn_ms:
            return
        self._evidence.add(reference, level_db)
        self._count += 1
        if self._count % _EVERY == 0:
            self._estimate()

    def _estimate(self) -> None:
        """The lowest, over candidate delays, of the 90th percentile of played-minus-heard.

        Every delay needs its evidence first: a minimum over some of them may miss the true one.
        """
        bounds = self._evidence.bounds(round(self.config.learn_ms / 1000 / FRAME_S))
        if bounds is None:
            return
        best = int(bounds.argmin())
        self._erl = float(bounds[best])
        reach = round(_ALIGN_S / CELL_S)
        near = slice(max(0, best - reach), best + reach + 1)
        others = np.concatenate((bounds[: near.start], bounds[near.stop :]))
        sharp = not others.size or float(others.min()) - self._erl >= _SHARP_DB
        self._window = near if sharp else None
