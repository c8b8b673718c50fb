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
the call's echo return loss (ERL), within 3 dB by the half second. Echo louder than
``-engage_erl_db`` engages the canceller for the rest of the call; otherwise it is dropped, and
the level guard alone handles the faint echo, as without cancellation. The probe only listens (the
caller's audio goes on raw meanwhile; `EchoCanceller._judge` says why). A call the probe found
quiet is engaged later if the echo guard learns, on the raw line, a louder echo (a caller who
switches to speakerphone): the core passes its ERL in with every chunk.

The level guard stays behind the canceller as a second line of defence. It hears the cleaned
audio and learns the far larger loss of the residual echo there within two seconds, so a quiet
caller gets through it too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Final, Protocol

import numpy as np

__all__ = ["MODES", "AecConfig", "EchoCanceller", "Engine", "load_engine"]

MODES: Final = ("auto", "on", "off")
_AUDIBLE: Final = 104  # int16 peak of -50 dBFS: quieter played frames echo nothing worth cancelling
_WINDOW_S: Final = 2.0  # the line's clock follows the earliest arrival of the last this many seconds
_SLACK_S: Final = 0.005  # and moves later only when that is this much later (a gap, or clock drift)
_KEEP_S: Final = 0.25  # played audio kept behind the line's clock (arrivals can move that clock back)


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
    loud what it took out was against what we played. What it removes is the echo (in double talk
    also a little of the caller, which can only make the call look more echoic)."""

    __slots__ = ("_far", "_left", "_near", "_out", "erl_db")

    def __init__(self, samples: int) -> None:
        self._left = samples  # audible playback still to hear before judging
        self._far = self._near = self._out = 0.0
        self.erl_db: float | None = None

    def add(self, near: np.ndarray, out: np.ndarray, far: np.ndarray) -> float | None:
        """One block the canceller ran on; the call's ERL (dB) once the probe has heard enough."""
        x = far.astype(np.float64)
        power = float(np.dot(x, x))
        if power < len(far) * float(_AUDIBLE) ** 2:
            return None  # we were quiet: nothing to learn about the echo
        y, z = near.astype(np.float64), out.astype(np.float64)
        self._far += power
        self._near += float(np.dot(y, y))
        self._out += float(np.dot(z, z))
        self._left -= len(far)
        if self._left > 0:
            return None
        removed = max(self._near - self._out, self._far * 1e-9)
        self.erl_db = 10 * math.log10(self._far / removed)
        return self.erl_db


class EchoCanceller:
    """One call's canceller: the far end in from the playout side, caller frames in and out.

    ``frames`` counts the caller frames it processed (for metrics: zero on a call it never ran on).
    """

    __slots__ = (
        "_anchor", "_arrivals", "_block", "_engine", "_frame", "_loader", "_missing", "_played", "_pos", "_probe",
        "_rate", "_tail", "config", "echoic", "engaged", "frames",
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
        self._probe = _Probe(round(self.config.probe_ms / 1000 * rate)) if auto else None
        self.echoic: bool | None = None if auto else self.config.mode == "on"  # None: not judged yet
        self.engaged = False  # whether the canceller ran on the last chunk (its output is used once echoic)
        self.frames = 0

    @property
    def available(self) -> bool:
        """Whether the cancelling library loads here (``mode = "off"``: never)."""
        return self.config.mode != "off" and self._ready()

    def played(self, pcm: bytes, start: float) -> None:
        """One frame of ours will play at the caller from ``start`` (frames come in play order)."""
        if self.config.mode != "off" and not self._missing:
            self._played.add(pcm, start)

    def cleared(self, at: float) -> None:
        """Playback was cleared at ``at``: frames due to start then or later never play."""
        self._played.take_back(at)

    @property
    def erl_db(self) -> float | None:
        """The echo return loss the probe measured on this call (auto mode), or None."""
        return self._probe.erl_db if self._probe is not None else None

    def process(self, pcm: bytes, at: float, erl_db: float | None = None) -> bytes:
        """The caller's chunk that arrived at ``at`` (its last sample), with our echo taken out
        where the policy says so; otherwise the very same bytes. ``erl_db``: the echo return loss
        the echo guard has learnt on this call (None: not yet); after a probe found no echo, a
        louder echo the guard learns on the raw line engages the canceller."""
        count = len(pcm) // 2
        start = self._clock(count, at)
        if self.config.mode == "off" or self._missing:
            return pcm
        if self.echoic is False and erl_db is not None and erl_db < self.config.engage_erl_db:
            self.echoic = True  # for good: from now on the guard hears the cleaned line, not the echo path
        first = round(start * self._rate)
        self._played.forget(first - round(_KEEP_S * self._rate))
        self.engaged = self.echoic is not False and self._playing(start, start + count / self._rate)
        whole = count - count % self._block
        if not self.engaged or not whole or not self._ready() or self._engine is None:
            self.engaged = False
            return pcm
        near = np.frombuffer(pcm, "<i2", count=whole)
        far = self._played.read(first, whole)
        out = np.asarray(self._engine.process(near, far), dtype="<i2")
        self.frames += max(1, round(whole / self._frame))
        if self.echoic is None and self._probe is not None:
            self._judge(self._probe.add(near, out, far))
            return pcm  # the probe only listens: see `_judge`
        return out.tobytes() + pcm[2 * whole :]

    def _judge(self, erl_db: float | None) -> None:
        """The probe's verdict, once it has one. While it listens the caller's audio goes on raw:
        the echo guard downstream then learns the loss of the real echo path, which is right if
        the call turns out to need no cancelling. Had it heard the cleaned line, it would learn
        that there is no echo, and once the canceller stopped, the echo it had never heard would
        pass it as the caller. The other way round (raw, then cleaned) only leaves the guard
        stricter than it needs to be until it re-learns (two seconds)."""
        if erl_db is not None:
            self.echoic = erl_db < self.config.engage_erl_db
            if not self.echoic:
                self._engine = None  # a call without echo gives its canceller's memory back

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
