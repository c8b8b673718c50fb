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
``mode = "auto"`` only on calls whose echo calls for it. A *probe* runs the canceller over the
first ``probe_ms`` of the agent's audio and compares what it took out with what we played: that is
the call's echo return loss (ERL), within 3 dB by the half second. What it took out counts only
as far as it follows what we played (`_Probe` correlates the two): a fresh AEC3 suppresses hard
before it has converged, and would otherwise take a caller talking over the first reply, or line
hiss, for echo. Echo louder than ``-engage_erl_db`` engages the canceller for the rest of the
call; otherwise it is dropped, and the level guard alone handles the faint echo, as without
cancellation. The probe only listens (the caller's audio goes on raw meanwhile;
`EchoCanceller._judge` says why). A call the probe found quiet is engaged later if the echo guard
learns, on the raw line, an echo louder by ``_MARGIN_DB`` still (a caller who switches to
speakerphone; the guard's estimate is a lower bound that noise and talk drag down): the core
passes its ERL in with every chunk.

The level guard is not replaced: the listener hears the raw line exactly as without a canceller
and the cleaned line beside it (``bridge.core.residual``), and a frame is the caller if either
says so. That keeps what the cleaned line costs out of the common case: AEC3 hands its output
back 11 ms late at 8 kHz and softens the first frames of double talk, which, on the cleaned line
alone, delayed a caller's onset by 40-60 ms wherever the raw line could already tell. The
cleaned line has its own echo guard, which takes the canceller's estimate of the echo it leaves
at once when the probe engages it (`take_residual`), and whose verdicts count only while the
canceller's recent output does not follow ours (`follows_us`: after the echo path moves, the
filter is wrong for about a second and the residual is loud) and once it has re-learnt after a
false alarm.

A steady tone (hold music, a beep) is the one signal AEC3 cannot learn a path from: it excites
a single frequency, the linear filter stays unusable and the suppressor takes out everything
under the tone's echo, a caller included. `_excite` puts faint noise under a tonal reference.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Final, Protocol

import numpy as np

__all__ = [
    "MODES", "AecConfig", "Cleaned", "EchoCanceller", "Engine", "Fanout", "Gate", "Guard", "Listening", "load_engine",
]

MODES: Final = ("auto", "on", "off")
_AUDIBLE: Final = 104  # int16 peak of -50 dBFS: quieter played frames echo nothing worth cancelling
_WINDOW_S: Final = 2.0  # the line's clock follows the earliest arrival of the last this many seconds
_SLACK_S: Final = 0.005  # and moves later only when that is this much later (a gap, or clock drift)
_KEEP_S: Final = 0.25  # played audio kept behind the line's clock (arrivals can move that clock back)
_RECENT_S: Final = 0.2  # how much of its output `follows_us` judges
_DITHER_DB: Final = 0.0  # the noise added to a tonal reference, against its level (`_excite`)
_TONAL_S: Final = 0.5  # a reference is tonal when over this long
_TONAL_BINS: Final = 6  # its this many strongest frequencies (of 20 ms spectra)
_TONAL_SHARE: Final = 0.88  # hold at least this share of its power
_COHERENT: Final = 0.3  # the probe's removed signal correlates at least this much with ours when it is echo
_MARGIN_DB: Final = 10.0  # after a probe found no echo, the guard's cruder ERL (a lower bound: noise and a caller
# talking over us drag it down) engages the canceller only this far under ``engage_erl_db``
_RESIDUAL_MARGIN_DB: Final = 3.0  # the residual echo is assumed this much louder than the probe measured
_MAX_DELAY_S: Final = 0.35  # the longest echo delay the probe looks for (the echo guard's max_delay_ms and more)


@dataclass(frozen=True, slots=True)
class AecConfig:
    """How the canceller engages. Field metadata gives the allowed values (``choices`` or ``lo``/``hi``)."""

    mode: str = field(default="auto", metadata={"choices": MODES})  # auto: only on calls with echo; on; off
    engage_erl_db: float = field(default=25.0, metadata={"lo": 0.0, "hi": 60.0})  # auto: engage below this ERL
    tail_ms: int = field(default=400, metadata={"lo": 0, "hi": 5000})  # keep cancelling after the agent stops
    probe_ms: int = field(default=500, metadata={"lo": 100, "hi": 60000})  # auto: agent audio heard before judging

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


class _Played:
    """What we played, frame by frame on the call's clock (sample index = time x rate), kept until
    the line has gone past it; and when audible playback began and stops (``since``, ``until``).
    Appending a frame is all the work done while the canceller does not run."""

    __slots__ = ("_frames", "_gap", "_rate", "since", "until")

    def __init__(self, rate: int, gap_s: float) -> None:
        self._rate = rate
        self._gap = gap_s  # silence longer than this starts a new stretch of playback
        self._frames: deque[tuple[int, np.ndarray, float, float]] = deque()  # first sample, samples, before
        self.since = float("-inf")
        self.until = float("-inf")

    def add(self, pcm: bytes, start: float) -> None:
        x = np.frombuffer(pcm, "<i2", count=len(pcm) // 2)
        self._frames.append((round(start * self._rate), x, self.since, self.until))
        if len(x) and max(int(x.max()), -int(x.min())) >= _AUDIBLE:
            if start > self.until + self._gap:
                self.since = start
            self.until = max(self.until, start + len(x) / self._rate)

    def take_back(self, at: float) -> None:
        """Frames due to start at ``at`` or later never play (the one in flight does)."""
        first = round(at * self._rate)
        while self._frames and self._frames[-1][0] >= first:
            _, _, self.since, self.until = self._frames.pop()

    def forget(self, before: int) -> None:
        """The line is past sample ``before``: frames that ended earlier can no longer be read."""
        while self._frames and self._frames[0][0] + len(self._frames[0][1]) <= before:
            self._frames.popleft()

    def read(self, first: int, count: int) -> np.ndarray:
        """Samples ``first`` .. ``first + count - 1``; silence where nothing (kept) played."""
        out = np.zeros(count, np.int16)
        for start, x, _, _ in self._frames:
            if start >= first + count:
                break
            lo, hi = max(first, start), min(first + count, start + len(x))
            if lo < hi:
                out[lo - first : hi - first] = x[lo - start : hi - start]
        return out


class _Probe:
    """Auto mode's first look at a call: while the canceller runs before the call is judged, how
    loud what it took out was against what we played (the ERL), and whether what it took out
    follows what we played at all. The second question matters: a fresh AEC3 suppresses hard
    while its filter has not converged, so a caller talking over us in the first second loses
    most of their power to it although the line holds no echo. Echo is our signal through a
    linear path, so it correlates with what we played at the echo's delay; a caller does not.
    So the removed signal is cross-correlated with the far end over every delay up to
    ``max_delay``, and a call whose removed signal does not follow ours is judged echo-free."""

    __slots__ = (
        "_far", "_farx", "_lags", "_left", "_near", "_out", "_rate", "_removed", "coherence", "erl_db", "erle_db",
    )

    def __init__(self, samples: int, rate: int, max_delay_s: float) -> None:
        self._left = samples  # audible playback still to hear before judging
        self._rate = rate
        self._lags = round(max_delay_s * rate)
        self._far = self._near = self._out = 0.0
        self._farx: list[np.ndarray] = []  # every block the probe ran on: what we played, what AEC3 removed
        self._removed: list[np.ndarray] = []
        self.erl_db: float | None = None
        self.erle_db = 0.0  # what the canceller removed over the probe (near over its output)
        self.coherence: float | None = None  # the removed signal's peak normalised correlation with ours

    def add(self, near: np.ndarray, out: np.ndarray, far: np.ndarray) -> float | None:
        """One block the canceller ran on; the call's ERL (dB) once the probe has heard enough
        (infinite when what was removed is not our echo)."""
        x = far.astype(np.float64)
        y, z = near.astype(np.float64), out.astype(np.float64)
        self._farx.append(x)
        self._removed.append(y - z)
        power = float(np.dot(x, x))
        if power < len(far) * float(_AUDIBLE) ** 2:
            return None  # we were quiet: nothing to learn about the echo
        self._far += power
        self._near += float(np.dot(y, y))
        self._out += float(np.dot(z, z))
        self._left -= len(far)
        if self._left > 0:
            return None
        removed = max(self._near - self._out, self._far * 1e-9)
        self.coherence = self._coherence()
        self.erle_db = 10 * math.log10(max(self._near, 1.0) / max(self._out, 1.0))
        if self.coherence < _COHERENT:
            self.erl_db = math.inf  # what it took out was not ours: no echo to speak of
        else:  # the share of the removed power that follows ours (all of it for echo alone)
            self.erl_db = 10 * math.log10(self._far / (removed * self.coherence**2))
        return self.erl_db

    def _coherence(self) -> float:
        """max over delays 0..max_delay of |sum r[n] f[n-k]| / (|r| |f|)."""
        f, r = np.concatenate(self._farx), np.concatenate(self._removed)
        norm = math.sqrt(float(np.dot(f, f)) * float(np.dot(r, r)))
        if norm <= 0.0:
            return 0.0
        size = 1 << (2 * len(f) - 1).bit_length()
        corr = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(f, size)), size)[: self._lags + 1]
        return float(np.max(np.abs(corr))) / norm


def _correlation(near: np.ndarray, far: np.ndarray, lags: int) -> float:
    """max over k in 0..lags of |sum near[n] far[n + lags - k]| / (|near| |far over the same n|):
    how closely ``near`` follows ``far`` (which starts ``lags`` samples earlier) at its best delay."""
    n = len(near)
    size = 1 << (n + len(far)).bit_length()
    corr = np.fft.irfft(np.conj(np.fft.rfft(near, size)) * np.fft.rfft(far, size), size)[: lags + 1]
    energy = np.concatenate(([0.0], np.cumsum(far * far)))
    windows = energy[n : n + lags + 1] - energy[: lags + 1]  # far[j .. j + n) for j = 0 .. lags
    norm = np.sqrt(np.maximum(windows, 1e-9) * max(float(np.dot(near, near)), 1e-9))
    return float(np.max(np.abs(corr) / norm))


class EchoCanceller:
    """One call's canceller: the far end in from the playout side, caller frames in and out.

    ``frames`` counts the caller frames it processed (for metrics: zero on a call it never ran on).
    """

    __slots__ = (
        "_anchor", "_arrivals", "_behind", "_block", "_dither", "_engine", "_frame", "_loader", "_missing", "_played",
        "_pos", "_probe", "_rate", "_recent", "_residual", "_spectra", "_tail", "_window", "config", "echoic",
        "engaged", "frames",
    )

    def __init__(self, config: AecConfig | None = None, rate: int = 8000, frame_samples: int = 160,
                 *, loader: Callable[[int], Engine | None] = load_engine) -> None:
        self.config = config or AecConfig()
        self._rate = rate
        self._frame = frame_samples
        self._block = rate // 100  # AEC3 works in 10 ms blocks
        self._tail = self.config.tail_ms / 1000
        self._played = _Played(rate, self._tail)
        self._loader = loader
        self._engine: Engine | None = None
        self._missing = False  # the library failed to load once: never try again on this call
        self._anchor = float("inf")  # when the line's first sample arrived, by the earliest arrival
        self._arrivals: deque[tuple[float, float]] = deque()  # (arrival, anchor it implies), rising anchors
        self._pos = 0  # samples of the line seen
        auto = self.config.mode == "auto"
        self._probe = self._new_probe() if auto else None
        self.echoic: bool | None = None if auto else self.config.mode == "on"  # None: not judged yet
        self._residual: float | None = None
        self._behind: _Reference | None = None  # the cleaned line's echo guard, fed while we may clean
        self._dither = np.random.default_rng(0)
        self._window = np.hanning(frame_samples)
        self._spectra: deque[np.ndarray] = deque(maxlen=max(1, round(_TONAL_S * rate / frame_samples)))
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=max(1, round(_RECENT_S * rate / frame_samples)))
        self.engaged = False  # whether the canceller ran on the last chunk (its output is used once echoic)
        self.frames = 0

    @property
    def available(self) -> bool:
        """Whether the cancelling library loads here (``mode = "off"``: never)."""
        return self.config.mode != "off" and self._ready()

    def behind(self, listener: Listening) -> _Reference:
        """The playout's echo reference with this canceller beside ``listener``; ``listener`` alone
        when the canceller is off, so a call that never cancels pays nothing per played frame.
        Otherwise the listener hears the cleaned line too (`Gate.clean_too`): the canceller feeds
        that line's echo guard only while it may clean (not on a call the probe found echo-free),
        and the line asks the canceller whether its output follows ours (`follows_us`)."""
        if self.config.mode == "off":
            return listener
        cleaned = listener.gate.clean_too()
        self._behind = cleaned.guard
        cleaned.echoing = self.follows_us
        return Fanout(listener, self)

    def played(self, pcm: bytes, start: float) -> None:
        """One frame of ours will play at the caller from ``start`` (frames come in play order)."""
        if self.config.mode != "off" and not self._missing:
            self._played.add(pcm, start)
            if self._behind is not None and self.echoic is not False:
                self._behind.played(pcm, start)

    def cleared(self, at: float) -> None:
        """Playback was cleared at ``at``: frames due to start then or later never play."""
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
        if self.config.mode == "off" or self._missing:
            return pcm
        count = len(pcm) // 2
        start = self._clock(count, at)
        if self.echoic is False and erl_db is not None and erl_db < self.config.engage_erl_db - _MARGIN_DB:
            self.echoic = True  # for good: from now on the guard hears the cleaned line, not the echo path
        first = round(start * self._rate)
        self._played.forget(first - round((_KEEP_S + _MAX_DELAY_S + _RECENT_S) * self._rate))
        self.engaged = self.echoic is not False and self._playing(start, start + count / self._rate)
        whole = count - count % self._block
        if not self.engaged or not whole or not self._ready() or self._engine is None:
            self.engaged = False
            self._recent.clear()  # `follows_us` reads a contiguous stretch
            return pcm
        near = np.frombuffer(pcm, "<i2", count=whole)
        far = self._played.read(first, whole)
        out = np.asarray(self._engine.process(near, self._excite(far)), dtype="<i2")
        self.frames += max(1, round(whole / self._frame))
        self._recent.append((first, out))
        if self.echoic is None and self._probe is not None:
            self._judge(self._probe.add(near, out, far))
            return pcm  # the probe only listens: see `_judge`
        return out.tobytes() + pcm[2 * whole :]

    def clean(self, pcm: bytes, at: float, gate: Gate) -> bytes:
        """`process` as the call wires it: the raw line's guard's learnt ERL in, and when the
        probe engages the canceller, the residual echo's loss out (`take_residual`) to the
        cleaned line's guard (with no cleaned line, to the raw line's guard, which then hears
        the cleaned line)."""
        out = self.process(pcm, at, gate.echo.erl_db if gate.echo.learnt else None)
        if (loss := self.take_residual()) is not None:
            (gate.echo if gate.cleaned is None else gate.cleaned.guard).assume(loss)
        return out

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
        x = far.astype(np.float64)
        for k in range(0, len(x) - size + 1, size):
            self._spectra.append(np.square(np.abs(np.fft.rfft(x[k : k + size] * self._window))))
        spectrum = np.sum(self._spectra, axis=0)
        total = float(spectrum.sum())
        if len(self._spectra) < self._spectra.maxlen or total <= 0.0:  # type: ignore[operator]
            return far
        if float(np.sort(spectrum)[-_TONAL_BINS:].sum()) < _TONAL_SHARE * total:
            return far
        rms = math.sqrt(float(np.dot(x, x)) / max(len(x), 1))
        noise = self._dither.standard_normal(len(x)) * rms * 10 ** (_DITHER_DB / 20)
        return np.clip(np.round(x + noise), -32768, 32767).astype(np.int16)

    def follows_us(self) -> bool:
        """Whether what the canceller let through lately (its last `_RECENT_S` of output) follows
        what we played at some echo delay: a residual echo, not a caller. After the echo path
        moves, the filter is wrong until it re-converges and the residual is loud; a caller's
        voice does not correlate with ours (the probe's test, `_Probe`). About 0.2 ms; asked only
        for a frame that only the cleaned line takes for the caller."""
        if not self._recent:
            return False
        first = self._recent[0][0]
        out = np.concatenate([x for _, x in self._recent]).astype(np.float64)
        lags = round(_MAX_DELAY_S * self._rate)
        far = self._played.read(first - lags, len(out) + lags).astype(np.float64)
        return _correlation(out, far, lags) >= _COHERENT

    def _new_probe(self) -> _Probe:
        return _Probe(round(self.config.probe_ms / 1000 * self._rate), self._rate, _MAX_DELAY_S)

    def _judge(self, erl_db: float | None) -> None:
        """The probe's verdict, once it has one. While it listens the caller's audio goes on raw:
        the echo guard downstream then learns the loss of the real echo path, which is right if
        the call turns out to need no cancelling. Had it heard the cleaned line, it would learn
        that there is no echo, and once the canceller stopped, the echo it had never heard would
        pass it as the caller. The other way round (raw, then cleaned) would leave the guard
        stricter than it needs to be until it re-learnt: `take_residual` hands it the new loss."""
        if erl_db is not None:
            self.echoic = erl_db < self.config.engage_erl_db
            if not self.echoic:
                self._engine = None  # a call without echo gives its canceller's memory back
            elif self._probe is not None:
                self._residual = erl_db + self._probe.erle_db - _RESIDUAL_MARGIN_DB

    def take_residual(self) -> float | None:
        """Once, when the probe engages the canceller: how far below what we play the echo left
        on the cleaned line is (the probe's ERL plus what the canceller removed over it, less a
        margin; the caller's voice or noise in the probe only makes it smaller). The echo guard
        takes it at once instead of holding the raw line's loss until it has re-learnt."""
        residual, self._residual = self._residual, None
        return residual

    def _clock(self, count: int, at: float) -> float:
        """When the chunk's first sample was spoken, on the playout clock. The line's samples are
        evenly spaced after an anchor: the earliest time the first sample can have arrived, by the
        arrivals of the last `_WINDOW_S` (jitter only ever delays a frame, so the earliest is the
        truest). The anchor moves earlier at once, and later only by more than `_SLACK_S` (frames
        the carrier never sent, or its clock running slow), so a jittery line reads a contiguous
        reference."""
        offset = at - (self._pos + count) / self._rate
        while self._arrivals and self._arrivals[-1][1] >= offset:
            self._arrivals.pop()
        self._arrivals.append((at, offset))
        while self._arrivals[0][0] < at - _WINDOW_S:
            self._arrivals.popleft()
        earliest = self._arrivals[0][1]
        if earliest < self._anchor or earliest - self._anchor > _SLACK_S:
            self._anchor = earliest
        start = self._anchor + self._pos / self._rate
        self._pos += count
        return start

    def _playing(self, start: float, end: float) -> bool:
        """Our audio plays over the chunk, or stopped less than ``tail_ms`` before it."""
        return self._played.since <= end and start <= self._played.until + self._tail

    def _ready(self) -> bool:
        if self._engine is None and not self._missing:
            self._engine = self._loader(self._rate)
            self._missing = self._engine is None
        return self._engine is not None
