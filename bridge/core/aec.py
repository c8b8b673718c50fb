"""Echo cancellation: take the agent's own voice out of the caller's audio before anyone listens.

The echo guard (``bridge.core.echo``) tells echo from a caller by loudness alone, so a caller no
louder than the echo (a quiet voice over a speakerphone that returns the agent 10 dB down) is
masked with it. An adaptive echo canceller subtracts the echo instead: it learns the echo path
from what we sent and what came back, and leaves the caller. WebRTC's AEC3 (the canceller of
every browser call) does this; ``pywebrtc-audio`` wraps it for numpy (Apache-2.0, a 0.4 MB wheel).
The import is optional: without the library `EchoCanceller` hands every frame back untouched and
the call runs as it does without cancellation.

**Alignment by the playout clock.** The canceller is fed the far end (what we sent, frame by frame,
with the time each frame starts playing at the caller: the core's pacing model, as the echo guard
gets it) and the near end (the caller's frames with their arrival time). The near stream is put on
the same clock: sample *n* of the line is taken to have arrived ``n / rate`` after an anchor, the
earliest the recent arrivals allow (network jitter only ever delays a frame), so the far end read
for each near frame is a contiguous stretch of what played over the same 20 ms. The echo then lags its
source by the echo path's delay alone (40-300 ms), which AEC3's own delay estimator finds. A
``clear`` takes back what never played.

**Pay only where there is echo.** AEC3 costs about 10 ms of CPU per audio second and 0.4 MB per
instance, more than the rest of a call's audio path. So it runs only while the agent's audio plays
and for ``tail_ms`` after (the echo of the last syllable arrives up to the longest echo delay later,
then reverberates: keep ``tail_ms`` at least the echo guard's ``max_delay_ms``), and with
``mode = "auto"`` only on calls whose echo calls for it. A *probe* listens to the raw line over
the first ``probe_ms`` of the agent's audio, without any canceller: the part of the line that
follows what we played (one cross-correlation over every delay up to `_MAX_DELAY_S`, when the
probe has heard enough) is the echo, and its loss against what we played is the call's echo
return loss (ERL), within a dB at any delay. A caller talking over the first reply, or line hiss,
does not follow what we played, and does not count (`bridge.core.probe.Probe`). Echo louder than
``-engage_erl_db`` engages the canceller for the rest of the call: it is made then and run at once
over the blocks the probe kept, so it starts as converged as if it had run from the first frame.
Otherwise no canceller is ever made, and the call does nothing per caller frame and only keeps
the frames it plays: a call without echo costs what it costs with ``mode = "off"`` (when the probe
ran AEC3 itself, calls without echo spent 11 % of a 100-call worker's CPU here). The probe only
listens (the caller's audio goes on raw meanwhile; `EchoCanceller._judge` says why). A call the
probe found quiet is engaged later if the echo guard learns, on the raw line, an echo louder by
``_MARGIN_DB`` still (a caller who switches to speakerphone; the guard's estimate is a lower
bound that noise and talk drag down): the core passes its ERL in (`EchoCanceller.clean` looks
every `_RECHECK` frames).

The level guard is not replaced: the listener hears the raw line exactly as without a canceller
and, once the canceller runs, the cleaned line beside it (``bridge.core.residual``), and a frame is the caller if either
says so. That keeps what the cleaned line costs out of the common case: AEC3 hands its output
back 11 ms late at 8 kHz and softens the first frames of double talk, which, on the cleaned line
alone, delayed a caller's onset by 40-60 ms wherever the raw line could already tell. The
cleaned line has its own echo guard, which takes the canceller's estimate of the echo it leaves
at once when the probe engages it (`take_residual`), and whose verdicts count only while the
canceller's recent output does not follow ours (`follows_us`: after the echo path moves, the
filter is wrong for about a second and the residual is loud) and once it has re-learnt after a
false alarm.

**The listener's line is linear only.** AEC3's output (what the recorder, and so the
speech-to-text, gets) has been through its non-linear suppressor, which in double talk takes a
quiet caller out with the echo. So the line the listener hears beside the raw one (`line`) comes
from a second canceller, linear only (``bridge.core.linear``: SpeexDSP's MDF), made when the
probe engages AEC3 and fed what we played already shifted by the echo delay the probe found (its
correlation peak, `Probe.delay`), so that a short filter spans only the room's tail; it runs over
the probe's blocks before the catch-up (`_rehearse`), its ERLE over them sets the cleaned line's
residual, and `follows_us` judges its output. Without ``libspeexdsp``, and where there is no
probe delay (``mode = "on"``, a call engaged later by the guard), the listener hears AEC3's output.

A steady tone (hold music, a beep) is the one signal AEC3 cannot learn a path from: it excites
a single frequency, the linear filter stays unusable and the suppressor takes out everything
under the tone's echo, a caller included. `_excite` puts faint noise under a tonal reference.

**A refused call asks again.** A worker hands out only so many cancellers, and none while it lags
(``bridge.core.budget``). A call judged echoic that it refuses goes on as a call without echo
(nothing done per frame, the level guard alone), and asks again `RETRY_S` later while its agent
talks: granted, it probes the echo afresh and engages as at the first reply (`_retry`), so its
cleaned line counts only once the canceller demonstrably removes the echo (`removes`). A library
that fails to load is never asked for again on the call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Final, Protocol

import numpy as np

from bridge.core.budget import AecBudget
from bridge.core.linear import LEAD_S, TAPS_S, Linear, load_linear
from bridge.core.lineclock import SLACK_S, LineClock
from bridge.core.probe import AUDIBLE, COHERENT, Probe, correlation

__all__ = [
    "MODES", "AecConfig", "Cleaned", "EchoCanceller", "Engine", "Fanout", "Gate", "Guard", "Listening", "load_engine",
]

MODES: Final = ("auto", "on", "off")
_KEEP_S: Final = 0.25  # played audio kept behind the line's clock (arrivals can move that clock back)
_RECENT_S: Final = 0.2  # how much of its output `follows_us` judges
_DITHER_DB: Final = 0.0  # the noise added to a tonal reference, against its level (`_excite`)
_TONAL_S: Final = 0.5  # a reference is tonal when over this long
_TONAL_BINS: Final = 6  # its this many strongest frequencies (of 20 ms spectra)
_TONAL_SHARE: Final = 0.88  # hold at least this share of its power
_MARGIN_DB: Final = 10.0  # after a probe found no echo, the guard's cruder ERL (a lower bound: noise and a caller
# talking over us drag it down) engages the canceller only this far under ``engage_erl_db``
_RESIDUAL_MARGIN_DB: Final = 3.0  # the residual echo is assumed this much louder than the probe measured
_RECHECK: Final = 25  # on a call judged echo-free, the echo guard's learnt ERL is looked at every this many frames
_REHEARSALS: Final = 2  # extra passes of the linear canceller over the probe's blocks before it runs (`_rehearse`)
_EDGE_DB: Final = 20.0  # what we play starts or stops abruptly: a 10 ms block this much louder than its neighbour
_TRIM: Final = 0.25  # the share of the probe's blocks an ERLE leaves out (those it removed least from: `_erle`)
_TRUST_S: Final = 1.0  # the cleaned line is trusted by what the canceller removed over this much of our audio
_TRUST_TRIM: Final = 0.5  # leaving out the half it removed least from (a caller talking over us: `removes`)
_TRUST_DB: Final = 10.0  # and it must remove at least this much (less where the probe measured less)
_MAX_DELAY_S: Final = 0.35  # the longest echo delay the probe looks for (the echo guard's max_delay_ms and more)
RETRY_S: Final = 5.0
"""A call the worker refused a canceller (`AecBudget.take`: "budget", "lag") asks again this much call
time later, and then every `_RECHECK` frames while its agent is silent. Asking costs nothing, but a
grant does: a fresh probe of the echo and a catch-up over it (about 10 ms of CPU). The calls a
worker refused while it lagged all wait for the same calm moment; each asking `RETRY_S` after its
own refusal spreads their catch-ups over the interval instead of landing them in one burst that
makes the worker's timers late again. Five seconds: a caller waits at most a sentence or two for
the canceller once the worker is calm or a slot is free."""


@dataclass(frozen=True, slots=True)
class AecConfig:
    """How the canceller engages. Field metadata gives the allowed values (``choices`` or ``lo``/``hi``)."""

    mode: str = field(default="auto", metadata={"choices": MODES})  # auto: only on calls with echo; on; off
    engage_erl_db: float = field(default=25.0, metadata={"lo": 0.0, "hi": 60.0})  # auto: engage below this ERL
    tail_ms: int = field(default=400, metadata={"lo": 0, "hi": 5000})  # keep cancelling after the agent stops
    probe_ms: int = field(default=500, metadata={"lo": 100, "hi": 60000})  # auto: agent audio heard before judging
    # per worker process: cancellers running at once; a call that needs one past that keeps the level guard alone
    max_engaged: int = field(default=20, metadata={"lo": 0, "hi": 100000})

    def __post_init__(self) -> None:
        for f in fields(self):
            value, rule = getattr(self, f.name), f.metadata
            if "choices" in rule and value not in rule["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(rule['choices'])}")
            if "lo" in rule and not rule["lo"] <= value <= rule["hi"]:
                raise ValueError(f"{f.name} must be {rule['lo']}-{rule['hi']}")


class _Reference(Protocol):
    def played(self, pcm: bytes, start: float) -> None: ...

    def cleared(self, at: float) -> None: ...


class Fanout:
    """The playout's one echo reference handed on to several listeners (the echo guard and the
    canceller both need every played frame and every clear, in the same order)."""

    __slots__ = ("_to",)

    def __init__(self, *to: _Reference) -> None:
        self._to = to

    def played(self, pcm: bytes, start: float) -> None:
        for ref in self._to:
            ref.played(pcm, start)

    def cleared(self, at: float) -> None:
        for ref in self._to:
            ref.cleared(at)


class Guard(Protocol):
    """The level guard behind the canceller (``bridge.core.echo.EchoGuard``), as `EchoCanceller.clean` uses it."""

    @property
    def erl_db(self) -> float: ...

    @property
    def learnt(self) -> bool: ...

    def assume(self, erl_db: float) -> None: ...


class _Guarded(Guard, _Reference, Protocol):
    """An echo guard as the canceller feeds it: the played reference, and `Guard`'s surface."""


class Cleaned(Protocol):
    """The listener's view of the cleaned line (``bridge.core.residual.CleanedLine``)."""

    @property
    def guard(self) -> _Guarded: ...

    echoing: Callable[[], bool] | None


class Gate(Protocol):
    """The listener's gate (``bridge.core.bargein.LineGate``) as `EchoCanceller.clean` uses it."""

    @property
    def echo(self) -> Guard: ...

    @property
    def cleaned(self) -> Cleaned | None: ...

    def clean_too(self) -> Cleaned: ...


class Listening(_Reference, Protocol):
    """The listener (``bridge.core.bargein.Listener``): the played reference, and its gate."""

    @property
    def gate(self) -> Gate: ...


class Engine(Protocol):
    """One call's echo canceller: ``near`` and ``far`` in step, int16, whole 10 ms blocks."""

    def process(self, near: np.ndarray, far: np.ndarray) -> np.ndarray: ...


def load_engine(rate: int) -> Engine | None:
    """A fresh AEC3 instance, or None when ``pywebrtc-audio`` is not installed (the ``aec`` extra).
    Imported here, not at module load, so the core runs without it."""
    try:
        import pywebrtc_audio
    except ImportError:
        return None
    engine: Engine = pywebrtc_audio.AudioProcessor(sample_rate=rate, echo_cancellation=True)
    return engine


def _audible(x: np.ndarray) -> bool:
    """Whether a frame of ours peaks at `AUDIBLE` or more: one that can echo, not silence or dither."""
    return bool(len(x)) and max(int(x.max()), -int(x.min())) >= AUDIBLE


class _Played:
    """What we played, frame by frame on the call's clock (sample index = time x rate), kept until
    the line has gone past it; and when audible playback began and stops (``since``, ``until``).
    The frames are also written, as they come, into one contiguous buffer of samples from
    ``_base`` on, so that `read` (two or three times per caller chunk while the canceller runs) is
    one slice, not a walk over every frame kept (36 us a chunk). Appending a frame is all the work
    done while the canceller does not run."""

    __slots__ = ("_base", "_buffer", "_frames", "_gap", "_rate", "since", "until")

    def __init__(self, rate: int, gap_s: float) -> None:
        self._rate = rate
        self._gap = gap_s  # silence longer than this starts a new stretch of playback
        self._frames: deque[tuple[int, np.ndarray, float, float]] = deque()  # first sample, samples, before
        self._base = 0  # the sample ``_buffer[0]`` holds
        self._buffer = np.zeros(0, np.int16)  # the kept frames' samples, later frames over earlier ones
        self.since = float("-inf")
        self.until = float("-inf")

    def add(self, pcm: bytes, start: float) -> None:
        x = np.frombuffer(pcm, "<i2", count=len(pcm) // 2)
        first = round(start * self._rate)
        if not self._frames:
            self._base, self._buffer = first, self._buffer[:0]
        self._frames.append((first, x, self.since, self.until))
        self._write(first, x)
        if _audible(x):
            if start > self.until + self._gap:
                self.since = start
            self.until = max(self.until, start + len(x) / self._rate)

    def _write(self, first: int, x: np.ndarray, since: int | None = None) -> None:
        """``x`` from sample ``first`` on into the buffer (only from sample ``since`` on, if given)."""
        lo = max(first, self._base, first if since is None else since)
        end = first + len(x)
        if end <= lo:
            return
        if end - self._base > len(self._buffer):  # grow (the front is dropped as the line moves on)
            grown = np.zeros(max(end - self._base, 2 * len(self._buffer), 4096), np.int16)
            grown[: len(self._buffer)] = self._buffer
            self._buffer = grown
        self._buffer[lo - self._base : end - self._base] = x[lo - first :]

    def frames(self) -> list[tuple[bytes, float]]:
        """The frames kept, as `add` was given them."""
        return [(x.tobytes(), start / self._rate) for start, x, _, _ in self._frames]

    def take_back(self, at: float) -> None:
        """Frames due to start at ``at`` or later never play (the one in flight does)."""
        first = round(at * self._rate)
        cut: int | None = None
        while self._frames and self._frames[-1][0] >= first:
            cut, _, self.since, self.until = self._frames.pop()
        if cut is not None:  # silence from the first frame taken back on, then what the rest put there
            self._buffer[max(0, cut - self._base) :] = 0
            for start, x, _, _ in self._frames:
                if start + len(x) > cut:
                    self._write(start, x, cut)

    def forget(self, before: int) -> None:
        """The line is past sample ``before``: frames that ended earlier can no longer be read."""
        while self._frames and self._frames[0][0] + len(self._frames[0][1]) <= before:
            self._frames.popleft()
        base = min(before, self._frames[0][0]) if self._frames else before
        if base > self._base:
            self._buffer = self._buffer[min(base - self._base, len(self._buffer)) :]
            self._base = base

    def read(self, first: int, count: int) -> np.ndarray:
        """Samples ``first`` .. ``first + count - 1``; silence where nothing (kept) played."""
        out = np.zeros(count, np.int16)
        lo, hi = max(first, self._base), min(first + count, self._base + len(self._buffer))
        if lo < hi:
            out[lo - first : hi - first] = self._buffer[lo - self._base : hi - self._base]
        return out


def _edge(x: np.ndarray, block: int) -> bool:
    """Whether ``x`` starts or stops abruptly somewhere: a ``block`` of it at least `_EDGE_DB`
    louder than the next or the one before, and audible."""
    power = np.mean(np.square(x[: len(x) // block * block].reshape(-1, block)), axis=1)
    db = 10 * np.log10(power + 1.0)
    jump = np.abs(np.diff(db))
    loud = np.maximum(db[1:], db[:-1]) >= 20 * math.log10(AUDIBLE)
    return bool(np.any((jump >= _EDGE_DB) & loud))


def _erle(blocks: list[tuple[float, float]], trim: float = _TRIM) -> float:
    """What a canceller removed, in dB, from blocks' powers before and after it: over all but the
    `_TRIM` of them it removed least from, so that a caller talking over a few of them (whom the
    canceller rightly leaves) does not count as echo it failed to remove: over the whole probe,
    40 ms of a caller 10 dB under us put a converged filter's 20 dB at 10. The median block's
    would not do: in the echo's quiet stretches the line's own noise is most of what is left."""
    if not blocks:
        return 0.0
    ratio = sorted(blocks, key=lambda b: b[0] / max(b[1], 1.0))[math.floor(trim * len(blocks)) :]
    return 10 * math.log10(max(sum(b[0] for b in ratio), 1.0) / max(sum(b[1] for b in ratio), 1.0))


class EchoCanceller:
    """One call's canceller: the far end in from the playout side, caller frames in and out.

    ``frames`` counts the caller frames it processed (for metrics: zero on a call it never ran on);
    ``refused``: why the call first ran without the canceller it needed, or paused it ("budget", "lag":
    `AecBudget`), or "". It keeps that first reason when a later ask is granted or refused for another:
    it says the call was refused at least once, and why, so a call counts once in the metrics; whether
    a canceller ran after all, ``frames`` says.
    """

    __slots__ = (
        "__weakref__", "_added", "_behind", "_block", "_budget", "_clocked", "_dither", "_engine", "_floor", "_frame",
        "_gate", "_heard", "_line", "_linear", "_linear_loader", "_linear_next", "_loader", "_now", "_off", "_parked",
        "_played", "_probe", "_rate", "_recent", "_removed", "_residual", "_retry_at", "_shift", "_spectra",
        "_spectrum", "_tail", "_tonal", "_wait", "_window", "config", "echoic", "engaged", "frames", "line", "refused",
    )

    def __init__(self, config: AecConfig | None = None, rate: int = 8000, frame_samples: int = 160,
                 *, loader: Callable[[int], Engine | None] = load_engine,
                 linear: Callable[[int, int, int], Linear | None] = load_linear,
                 budget: AecBudget | None = None) -> None:
        self.config = config or AecConfig()
        self._rate = rate
        self._frame = frame_samples
        self._block = rate // 100  # AEC3 works in 10 ms blocks
        self._tail = self.config.tail_ms / 1000
        self._played = _Played(rate, self._tail)
        self._loader = loader
        self._engine: Engine | None = None
        self._budget = budget  # the worker's canceller slots (None: no limit)
        self._now = float("-inf")  # the last caller chunk's arrival: when a slot is asked for
        self.refused = ""
        self._retry_at: float | None = None  # refused a slot: when to ask again (`RETRY_S`)
        self._linear_loader = linear
        self._linear: Linear | None = None  # the listener's linear-only canceller, made when the probe engages AEC3
        self._shift = 0  # the linear canceller's far end is read this many samples early (the echo's delay)
        self._linear_next = 0  # the line sample after the last block the linear canceller was given
        self._heard = np.zeros(0, np.int16)  # the listener's cleaned copy of the last block cancelled
        self._off = self.config.mode == "off"  # or the library failed to load once: never try again on this call
        # Until the first frame of ours, and on a call judged echo-free, the line's clock is not kept
        # (nothing at all is done per frame): a clock started later re-anchors, as at a call's start.
        self._clocked = False
        self._parked: deque[tuple[bytes, float]] | None = None  # judged echo-free: the frames played lately
        self._wait = 0  # judged echo-free: caller frames until the echo guard's ERL is looked at again
        self._line = LineClock(rate)  # the line's samples on the playout clock, while ``_clocked``
        auto = self.config.mode == "auto"
        self._probe = self._fresh_probe() if auto else None
        self.echoic: bool | None = None if auto else self.config.mode == "on"  # None: not judged yet
        self._residual: float | None = None
        self._gate: Gate | None = None  # the listener's gate, which hears the cleaned line while we may clean
        self._behind: _Reference | None = None  # the cleaned line's echo guard, fed while we may clean
        self._dither: np.random.Generator | None = None  # `_excite`'s, made with the canceller
        self._window = np.ones(0)
        self._tonal = False  # whether the last half second we played was a steady tone (`_excite`)
        self._spectra: deque[np.ndarray] = deque(maxlen=max(1, round(_TONAL_S * rate / frame_samples)))
        self._spectrum = np.zeros(0)  # their sum, kept as they come and go
        self._added = 0  # spectra added so far
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=max(1, round(_RECENT_S * rate / frame_samples)))
        # each of the last `_TRUST_S` of chunks where we played: the line's power, and the cleaned line's
        self._removed: deque[tuple[float, float]] = deque(maxlen=max(1, round(_TRUST_S * rate / frame_samples)))
        self._floor = _TRUST_DB  # what the canceller must go on removing for its line to be trusted (`removes`)
        self.engaged = False  # whether the canceller ran on the last chunk (and handed back its output)
        self.line = b""  # the last chunk as the listener's cleaned line hears it, while ``engaged``
        self.frames = 0

    def _fresh_probe(self) -> Probe:
        return Probe(round(self.config.probe_ms / 1000 * self._rate), self._rate, _MAX_DELAY_S)

    @property
    def available(self) -> bool:
        """Whether the cancelling library loads here (``mode = "off"``: never)."""
        return self.config.mode != "off" and self._ready()

    def behind(self, listener: Listening) -> _Reference:
        """The playout's echo reference with this canceller beside ``listener``; ``listener`` alone
        when the canceller is off, so a call that never cancels pays nothing per played frame.
        Otherwise the listener hears the cleaned line too (`Gate.clean_too`) from when the canceller
        may clean (``mode = "on"``: at once; auto: once the probe, or later the echo guard, finds
        echo): the canceller feeds that line's echo guard, and the line asks the canceller whether
        its output follows ours (`follows_us`)."""
        if self.config.mode == "off":
            return listener
        self._gate = listener.gate
        if self.echoic:
            self._attach()
        return Fanout(listener, self)

    def _attach(self) -> None:
        """The listener hears the cleaned line from now on (auto mode: once the call is judged echoic;
        until then the cleaned line would only hold stand-ins for the raw one)."""
        if self._gate is not None:
            cleaned = self._gate.clean_too()
            self._behind = cleaned.guard
            cleaned.echoing = self.untrusted

    def played(self, pcm: bytes, start: float) -> None:
        """One frame of ours will play at the caller from ``start`` (frames come in play order).
        On a call judged echo-free it is only kept aside, for an echo the guard learns later."""
        if self._parked is not None:
            self._parked.append((pcm, start))
        elif not self._off:
            self._clocked = True
            self._played.add(pcm, start)
            if self._behind is not None:
                self._behind.played(pcm, start)

    def cleared(self, at: float) -> None:
        """Playback was cleared at ``at``: frames due to start then or later never play."""
        if self._parked is not None:
            first = round(at * self._rate)
            while self._parked and round(self._parked[-1][1] * self._rate) >= first:
                self._parked.pop()
        self._played.take_back(at)
        if self._behind is not None:
            self._behind.cleared(at)

    @property
    def cleaning(self) -> bool:
        """Whether the last chunk `process` handed back was cleaned (not the caller's audio as it came)."""
        return self.engaged and self.echoic is True

    @property
    def erl_db(self) -> float | None:
        """The echo return loss the probe measured on this call (auto mode), or None."""
        return self._probe.erl_db if self._probe is not None else None

    def process(self, pcm: bytes, at: float, erl_db: float | None = None) -> bytes:
        """The caller's chunk that arrived at ``at`` (its last sample), with our echo taken out
        where the policy says so; otherwise the very same bytes. ``erl_db``: the echo return loss
        the echo guard has learnt on this call (None: not yet); after a probe found no echo, a
        louder echo the guard learns on the raw line engages the canceller."""
        if not self._clocked:  # off, before our first frame, judged echo-free, or refused a canceller for now
            if self._parked is None or not (self._retry(at) if self._retry_at is not None else erl_db is not None
                                            and erl_db < self.config.engage_erl_db - _MARGIN_DB):
                return pcm
            self._wake()
        count = len(pcm) // 2
        self._now = at
        start = self._line.start(count, at)
        first = round(start * self._rate)
        self._played.forget(first - round((_KEEP_S + _MAX_DELAY_S + _RECENT_S) * self._rate))
        whole = count - count % self._block
        self.engaged = False
        if not whole or not self._playing(start, start + count / self._rate) or self._lagging(at):
            self._recent.clear()  # `follows_us` reads a contiguous stretch
            return pcm
        near = np.frombuffer(pcm, "<i2", count=whole)
        far = self._played.read(first, whole)
        if self.echoic is None and self._probe is not None:  # the probe only listens: see `_judge`
            if not self._probe.add(first, near, far, self._played):
                return pcm
            out = self._judge()
        elif self._ready():
            out = self._cancel(first, near, far)
        else:
            out = None
        if out is None:
            return pcm
        self.engaged = True
        self.line = self._heard.tobytes() + pcm[2 * whole :]
        return out.tobytes() + pcm[2 * whole :]

    def clean(self, pcm: bytes, at: float, gate: Gate) -> bytes:
        """`process` as the call wires it: the raw line's guard's learnt ERL in (while the probe's
        verdict is that there is no echo), and when the probe engages the canceller, the residual
        echo's loss out (`take_residual`) to the cleaned line's guard (with no cleaned line, to the
        raw line's guard, which then hears the cleaned line)."""
        if self._parked is not None:  # judged echo-free
            self._wait -= 1
            if self._wait > 0:  # the guard's ERL moves slowly: a look every `_RECHECK` frames will do
                return pcm
            self._wait = _RECHECK
            echo = gate.echo
            return self.process(pcm, at, echo.erl_db if echo.learnt else None)
        out = self.process(pcm, at)
        if self._residual is not None and (loss := self.take_residual()) is not None:
            (gate.echo if gate.cleaned is None else gate.cleaned.guard).assume(loss)
        return out

    def _cancel(self, first: int, near: np.ndarray, far: np.ndarray, shifted: np.ndarray | None = None) -> np.ndarray:
        """The canceller's output for one block (``near`` starts at line sample ``first``); the
        listener's copy (`line`) from the linear canceller when there is one, fed the far end
        read the echo's delay early (``shifted``: given, while catching up over the probe). The
        linear canceller's far end runs on without a seam through the line clock's small moves
        (`LineClock`: the anchor moving a fraction of a sample earlier rounds the block's start one
        sample back): a one-sample jump costs a sharp echo path all its cancellation, and without
        a suppressor behind it, the residual that a jittery line's re-anchoring let through
        paused the agent (5 of 24 calls with 20 ms of jitter); a real gap (`SLACK_S` or more) is
        followed."""
        assert self._engine is not None
        out = np.asarray(self._engine.process(near, self._excite(far)), dtype="<i2")
        self.frames += max(1, round(len(near) / self._frame))
        if self._linear is not None:
            if shifted is None:
                if abs(first - self._linear_next) <= round(SLACK_S * self._rate):
                    first = self._linear_next  # see below
                shifted = self._played.read(first - self._shift, len(near))
            self._linear_next = first + len(near)
            self._heard = np.asarray(self._linear.process(near, shifted), dtype="<i2")
        else:
            self._heard = out
        self._recent.append((first, self._heard))
        x = (far if shifted is None else shifted).astype(np.float64)
        if float(np.dot(x, x)) >= len(x) * float(AUDIBLE) ** 2:  # what the listener's canceller was given played
            y, z = near.astype(np.float64), self._heard.astype(np.float64)
            self._removed.append((float(np.dot(y, y)), float(np.dot(z, z))))
        return out

    def untrusted(self) -> bool:
        """Whether the cleaned line may not prove the caller now: the canceller does not remove
        our echo (`removes`), or what it let through follows what we played (`follows_us`)."""
        return not self.removes() or self.follows_us()

    def removes(self) -> bool:
        """Whether the canceller demonstrably takes our echo out: what it removed over the last
        `_TRUST_S` of chunks where we played (`_erle`, over the half it removed most from: a
        caller talking over us for up to half of it, whom it rightly leaves, does not count) is
        at least `_TRUST_DB`, or where the probe measured less on this call (a noisy line: the
        noise stays), that less `_RESIDUAL_MARGIN_DB`. The cleaned line's guard was told the
        echo lies that far down (`take_residual`): when the canceller's reference no longer
        matches what the phone echoed (a worker's loop that lags behind its calls, so what it
        believes played and what did drift apart; an echo path that moved; a filter that
        diverged), the echo comes through it nearly whole and passed that guard as the caller
        on every call. Then the raw line's level guard decides alone, until the canceller
        removes the echo again."""
        if len(self._removed) < (self._removed.maxlen or 1) // 2:
            return True  # too little heard yet to judge: the probe's catch-up just measured it
        return _erle(list(self._removed), _TRUST_TRIM) >= self._floor

    def _excite(self, far: np.ndarray) -> np.ndarray:
        """What we played, for AEC3 to hear; with white noise as loud as it added while what we
        play is a steady tone (hold music, a beep). A tone excites one frequency: AEC3 then holds
        its linear filter unusable and falls back on a suppressor that takes out everything under
        the tone's echo, a caller talking over it included (measured: 30 dB of a caller 10 dB
        under a -12 dBFS tone over a -10 dB echo; faint noise, -41 dBFS, left a third of them
        suppressed). Noise that never comes back as echo shows AEC3 every frequency's echo path,
        all but the tone's near zero. How loud, measured (callers 10 dB under a -3 dBFS tone over
        a -6 dB echo): 6 dB under the tone, 11 of 18 missed; as loud, 2; 6 dB over, 13. Under
        speech it would hide the echo path from the filter (it would learn to cancel less), so
        only a tonal stretch gets it: the `_TONAL_BINS` strongest frequencies of the last half
        second hold at least `_TONAL_SHARE` of its power (speech at most 0.83, a tone 1.0, a
        three-note chord 0.93). Seeded: a call replays the same."""
        size = self._frame
        if self._dither is None:
            self._dither, self._window = np.random.default_rng(0), np.hanning(size)
        x = far.astype(np.float64)
        spectra = self._spectra
        for k in range(0, len(x) - size + 1, size):
            power = np.square(np.abs(np.fft.rfft(x[k : k + size] * self._window)))
            if len(spectra) == spectra.maxlen:
                self._spectrum -= spectra[0]
            spectra.append(power)
            self._spectrum = self._spectrum + power if len(self._spectrum) else power.copy()
            self._added += 1
            if self._added % len(spectra) == 0:  # now and then afresh: the running sum's rounding stays put
                self._spectrum = np.sum(spectra, axis=0)
        spectrum = self._spectrum
        total = float(spectrum.sum())
        self._tonal = len(spectra) == spectra.maxlen and total > 0.0 and (
            float(np.partition(spectrum, -_TONAL_BINS)[-_TONAL_BINS:].sum()) >= _TONAL_SHARE * total)
        if not self._tonal:
            return far
        rms = math.sqrt(float(np.dot(x, x)) / max(len(x), 1))
        noise = self._dither.standard_normal(len(x)) * rms * 10 ** (_DITHER_DB / 20)
        return np.clip(np.round(x + noise), -32768, 32767).astype(np.int16)

    def follows_us(self) -> bool:
        """Whether what the canceller let through lately (its last `_RECENT_S` of output) follows
        what we played at some echo delay: a residual echo, not a caller. After the echo path
        moves, the filter is wrong until it re-converges and the residual is loud; a caller's
        voice does not correlate with ours (the probe's test, `bridge.core.probe.Probe`). About 0.2 ms; asked only
        for a frame that only the cleaned line takes for the caller.

        And while we play a steady tone, whenever it started or stopped within the window: a
        filter that learnt the echo path from a tone knows it at the tone's frequency alone, and
        the click of a tone's abrupt start or end is broadband, so its echo passes the linear
        canceller at the raw line's level (a -3 dBFS beep's end: 2 of 3 calls paused)."""
        if not self._recent:
            return False
        first = self._recent[0][0]
        out = np.concatenate([x for _, x in self._recent]).astype(np.float64)
        lags = round(_MAX_DELAY_S * self._rate)
        far = self._played.read(first - lags, len(out) + lags).astype(np.float64)
        if self._tonal and self._linear is not None and _edge(far, self._block):
            return True
        return correlation(out, far, lags) >= COHERENT

    def _judge(self) -> np.ndarray | None:
        """The probe's verdict; on a call judged echoic, the canceller's output for the block that
        completed the probe. While the probe listens the caller's audio goes on raw: the echo guard
        downstream then learns the loss of the real echo path, which is right if the call turns out
        to need no cancelling. Had it heard the cleaned line, it would learn that there is no echo,
        and once the canceller stopped, the echo it had never heard would pass it as the caller.
        The other way round (raw, then cleaned) would leave the guard stricter than it needs to be
        until it re-learnt: `take_residual` hands it the new loss."""
        assert self._probe is not None
        erl_db = self._probe.judge()
        self.echoic = erl_db < self.config.engage_erl_db
        if not self.echoic:
            self.close()  # a slot taken to probe again (`_retry`) goes back
            self._park()
            return None
        out = self._catch_up()
        if out is not None:
            self._residual = erl_db + self._probe.erle_db - _RESIDUAL_MARGIN_DB
        return out

    def _catch_up(self) -> np.ndarray | None:
        """Run the fresh canceller over every block the probe kept, in order, as it would have run
        had it been on from the start (so it is as converged now), and measure what it removed
        over the probe's audible blocks (``erle_db``, `_erle`). Its output for the last block, or None
        without the library."""
        assert self._probe is not None
        if self._ready():
            self._shift = max(0, self._probe.delay - round(LEAD_S * self._rate))
            self._linear = self._linear_loader(self._rate, self._block, round(TAPS_S * self._rate))
        shifted = self._probe.shifted(self._shift) if self._linear is not None else None
        chunks, self._probe.chunks = self._probe.chunks, []
        self._probe.drop()
        if not self._ready():
            return None
        if self._linear is not None and shifted is not None:
            self._rehearse([c[1] for c in chunks], shifted)
        self._attach()
        if self._behind is not None:
            for pcm, start in self._played.frames():  # the cleaned line's guard hears what played from now on
                self._behind.played(pcm, start)
        removed: list[tuple[float, float]] = []  # each audible block's power, before and after
        out = np.zeros(0, np.int16)
        self._recent.clear()
        for k, (first, near, far, audible) in enumerate(chunks):
            if k and first != chunks[k - 1][0] + len(chunks[k - 1][1]):
                self._recent.clear()  # `follows_us` reads a contiguous stretch
            out = self._cancel(first, near, far, None if shifted is None else shifted[k])
            if audible:
                y, z = near.astype(np.float64), self._heard.astype(np.float64)
                removed.append((float(np.dot(y, y)), float(np.dot(z, z))))
        self._probe.erle_db = _erle(removed)
        self._floor = min(_TRUST_DB, self._probe.erle_db - _RESIDUAL_MARGIN_DB)
        return out

    def _rehearse(self, near: list[np.ndarray], far: list[np.ndarray]) -> None:
        """Run the linear canceller over the probe's blocks `_REHEARSALS` times before the catch-up
        proper (then silence as long as its filter, so no pass reads the end of the last): a
        fresh filter over the probe's half second of our audio removes only about 9 dB of it, too
        little to hear a caller 10 dB under us over a -6 dB echo, converged it removes 20 dB and
        more, and a pass costs about 2 ms of CPU. AEC3 needs no such thing (its suppressor)."""
        assert self._linear is not None
        quiet = np.zeros(self._block * -(-round(TAPS_S * self._rate) // self._block), np.int16)
        for _ in range(_REHEARSALS):
            for y, x in zip(near, far, strict=True):
                self._linear.process(y, x)
            self._linear.process(quiet, quiet)

    def _park(self, lately: bool = True) -> None:
        """A call without echo: keep only the frames we play (raw, for `_wake`), not the line's clock;
        from those that played lately on (``lately``) or from now on."""
        keep = max(1, round(2 * (_KEEP_S + _MAX_DELAY_S + _RECENT_S) * self._rate / self._frame))
        self._parked = deque(self._played.frames() if lately else (), maxlen=keep)
        self._played = _Played(self._rate, self._tail)
        self._clocked = False
        self._recent.clear()

    def _wake(self) -> None:
        """The echo guard learnt, on the raw line of a call the probe found quiet, an echo loud enough
        to cancel (a caller who switched to speakerphone), or the worker has a slot for a call it
        refused one (`_retry`): cancel from now on, on a fresh clock (as at the start of a call),
        with what played lately as the reference. A refused call in auto mode probes its echo
        again first, so that its canceller engages as at the first reply: converged over the
        probe's blocks, and with what it removed there measured (`_catch_up`)."""
        assert self._parked is not None
        parked, self._parked = self._parked, None
        if self._retry_at is not None and self._probe is not None:
            self._probe, self.echoic = self._fresh_probe(), None
        else:
            self.echoic = True  # from now on the guard hears the cleaned line, not the echo path
            self._attach()  # the cleaned line, its guard given what played lately
        self._retry_at = None
        for pcm, start in parked:
            self._played.add(pcm, start)
            if self._behind is not None:
                self._behind.played(pcm, start)
        self._clocked = True
        self._line.restart()

    def take_residual(self) -> float | None:
        """Once, when the probe engages the canceller: how far below what we play the echo left
        on the cleaned line is (the probe's ERL plus what the canceller removed over it, less a
        margin; the caller's voice or noise in the probe only makes it smaller). The echo guard
        takes it at once instead of holding the raw line's loss until it has re-learnt."""
        residual, self._residual = self._residual, None
        return residual

    def _playing(self, start: float, end: float) -> bool:
        """Our audio plays over the chunk, or stopped less than ``tail_ms`` before it."""
        return self._played.since <= end and start <= self._played.until + self._tail

    def _ready(self) -> bool:
        """Whether the canceller is there, made at first need (a call without echo never makes one)
        if the worker has a slot for it (`AecBudget`): else the line goes on as without a canceller
        until a slot is granted (`_retry`), and without the library for the rest of the call."""
        if self._engine is None and not self._off and self._retry_at is None and self._slot(self._now):
            self._engine = self._loader(self._rate)
            if self._engine is None:
                self.close()
                self._off, self._clocked = True, False
        return self._engine is not None

    def _slot(self, at: float) -> bool:
        """Whether the worker grants this call a canceller slot at ``at`` (it keeps one it holds).
        If not, the call says why (the first reason it was refused for: `refused`) and goes on as a
        call without echo, nothing done per frame, until `_retry` asks again `RETRY_S` later."""
        reason = "" if self._budget is None else self._budget.take(self, at)
        if reason:
            self.refused = self.refused or reason
            self._retry_at = at + RETRY_S
            self._behind = None  # its cleaned line's guard is fed again from the next grant on
            self._park(lately=False)  # what played before is long gone when it asks again
        return not reason

    def _retry(self, at: float) -> bool:
        """Whether a call refused a slot gets one now: `RETRY_S` after it was refused, asked while
        our audio plays or is about to (where a canceller was first asked for), and granted
        (`_slot`; the slot is held from now, for the fresh probe and the canceller after it)."""
        assert self._retry_at is not None and self._parked is not None
        if at < self._retry_at:
            return False
        for pcm, start in reversed(self._parked):
            if start + len(pcm) / (2 * self._rate) < at:
                return False  # all we play from now on is silence
            if _audible(np.frombuffer(pcm, "<i2", count=len(pcm) // 2)):
                return self._slot(at)
        return False

    def _lagging(self, at: float) -> bool:
        """Whether the worker lags behind its calls (`AecBudget.lagging`) while this call's canceller
        runs: it then skips its work (its CPU back to the worker), and the raw line's echo guard
        decides alone until the worker has caught up; the cleaned line is trusted again once the
        canceller demonstrably removes the echo again (`removes`)."""
        if self._engine is None or self._budget is None or not self._budget.lagging(at):
            return False
        self.refused = self.refused or "lag"
        return True

    def close(self) -> None:
        """The call is over: its slot goes back to the worker."""
        if self._budget is not None:
            self._budget.give_back(self)
