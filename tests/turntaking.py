"""A phone line for turn-taking tests: the core, Twilio's playback buffer, an echo path and a caller.

`run` plays one `Scenario` through `bridge.core.call.Call` in simulated time. The agent's reply
arrives as TTS audio; every frame the core sends goes into Twilio's playback model
(`bridge.tools.simulator.PlaybackBuffer`: plays in order, ``clear`` drops what has not started, marks
echo when their audio has played); what it *plays* comes back down the line ``delay_ms`` later
and ``echo_db`` quieter, summed with the caller's voice and the line noise, mu-law coded like
Twilio's inbound stream, in 20 ms frames. So the echo is exactly the audio the caller heard,
including what a pause cut off and where a resume picked up.

Only the core's public surface is used, so any settings can be measured on the same lines:
``python -m bench.turntaking`` prints plain webrtcvad barge-in against the shipped detector
(docs/vad-tuning.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from bridge.core.actions import Action, ClearPlayback, ConfirmTurn, ReplyHeard, SendMark, SendMedia, StartTurn
from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.core.call import Call, CallSettings
from bridge.core.events import (
    AgentDone,
    AgentText,
    CallerAudio,
    CallStarted,
    Event,
    MarkPlayed,
    Tick,
    TtsAudio,
    TtsConnected,
    TtsFinal,
)
from bridge.tools.simulator import PlaybackBuffer
from bridge.tools.simulator.cli import noise
from tests.support import load_wav

RATE = 8000
FRAME_S = 0.02
FRAME = 160  # mu-law bytes in one 20 ms frame
AGENT_FILES = ("caller_05.wav", "caller_06.wav", "caller_08.wav", "caller_01.wav")
REPLY_AT = 0.3  # first TTS audio
CHUNK_S = 0.25  # TTS chunks, arriving five times faster than real time
BARGE_WINDOW = 2.0  # a barge-in later than this after the onset is missed


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def gain(pcm: bytes, db: float) -> bytes:
    return pcm16(samples(pcm) * 10 ** (db / 20))


@cache
def agent_voice() -> bytes:
    """About 13 s of speech in four voices with short pauses: the agent's reply."""
    gap = b"\x00\x00" * int(RATE * 0.25)
    return gap.join(load_wav(name) for name in AGENT_FILES)


@dataclass(frozen=True)
class Sound:
    """Something the caller's line carries from ``at`` (seconds on the call timeline)."""

    at: float
    pcm: bytes
    label: str = ""
    speech: bool = True  # a real interruption (False: a cough, a click, noise: must not interrupt)


@dataclass(frozen=True)
class Scenario:
    sounds: tuple[Sound, ...] = ()
    echo_db: float | None = None  # None: no echo
    delay_ms: float = 0.0
    noise: bytes = b""  # line noise from 0 s, as long as the call or shorter
    duration: float = 8.0
    reply: bytes = b""  # the agent's TTS audio (default: `agent_voice`)
    speak: bool = True  # False: the agent says nothing after its greeting turn is requested
    delay_change: tuple[float, float] | None = None  # (from when, new delay_ms): the echo path moves
    jitter_ms: float = 0.0  # each caller frame reaches the bridge up to this late (in order, as over TCP)
    echo_path: tuple[float, ...] = ()  # the echo's impulse response before `echo_db` (empty: flat)


@dataclass
class Result:
    actions: list[tuple[float, Action]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    interrupted_at: float | None = None  # the reply was given up (ReplyHeard interrupted)
    turns: list[float] = field(default_factory=list)  # StartTurn times after the greeting
    resumes: list[tuple[bytes, bytes]] = field(default_factory=list)  # (first frame after, first unplayed)
    silences: list[float] = field(default_factory=list)  # how long each pause that resumed lasted
    media: int = 0

    def reaction(self, onset: float) -> float | None:
        """Onset to the first ``clear`` (the caller stops hearing the agent), if within the window."""
        return next((c - onset for c in self.clears if onset - 1e-9 <= c <= onset + BARGE_WINDOW), None)

    def committed(self, onset: float) -> bool:
        return self.interrupted_at is not None and onset - 1e-9 <= self.interrupted_at <= onset + BARGE_WINDOW


class Line:
    """The carrier and the caller side of one simulated call."""

    def __init__(self, scenario: Scenario, settings: CallSettings | None) -> None:
        self.s = scenario
        self.call = Call(settings)
        n = int(scenario.duration * RATE) + RATE
        self.mic = np.zeros(n)
        for sound in scenario.sounds:
            x = samples(sound.pcm)
            start = round(sound.at * RATE)
            self.mic[start : start + len(x)] += x[: max(0, n - start)]
        if scenario.noise:
            x = samples(scenario.noise)[:n]
            self.mic[: len(x)] += x
        self.heard = np.zeros(n)  # what the caller hears, as Twilio plays it
        self.buffer = PlaybackBuffer()
        self.marks: list[tuple[float, str]] = []
        self.result = Result()
        self._unplayed: list[bytes] = []  # mu-law frames dropped by the last clear, oldest first
        self._pending_resume = False
        self.arrivals = _arrivals(scenario.duration, scenario.jitter_ms)

    # ----------------------------------------------------------------- the phone side

    def line_frame(self, end: float) -> bytes:
        """The 20 ms the bridge receives at ``end``: caller + noise + echo, mu-law coded."""
        hi = round(end * RATE)
        lo = hi - int(FRAME_S * RATE)
        x = self.mic[lo:hi].copy()
        if self.s.echo_db is not None:
            delay = self.s.delay_ms
            if self.s.delay_change is not None and end >= self.s.delay_change[0]:
                delay = self.s.delay_change[1]
            d = round(delay / 1000 * RATE)
            if self.s.echo_path:
                taps = np.array(self.s.echo_path)
                echo = np.convolve(_shifted(self.heard, lo - len(taps) + 1, hi, d), taps, "valid")
            else:
                echo = _shifted(self.heard, lo, hi, d)
            x += echo * 10 ** (self.s.echo_db / 20)
        return ulaw_to_pcm(pcm_to_ulaw(pcm16(x)))

    def carry(self, at: float, action: Action) -> None:
        """What Twilio does with each phone action."""
        if isinstance(action, SendMedia):
            ulaw = pcm_to_ulaw(action.pcm)  # Twilio's line
            if self._pending_resume:
                self.result.resumes.append((ulaw[:FRAME], self._unplayed[0] if self._unplayed else b""))
                self.result.silences.append(at - self.result.clears[-1])
                self._pending_resume = False
            self.buffer.push_audio(at, ulaw)
            piece = self.buffer.played[-1]
            start = round(piece.start * RATE)
            pcm = samples(ulaw_to_pcm(piece.ulaw))
            self.heard[start : start + len(pcm)] = pcm[: max(0, len(self.heard) - start)]
            self.result.media += len(ulaw) // FRAME  # frames, however many a message joins
        elif isinstance(action, SendMark):
            self.buffer.push_mark(at, action.name)
        elif isinstance(action, ClearPlayback):
            before = list(self.buffer.played)
            echoes = self.buffer.clear(at)
            kept = len(self.buffer.played)
            rest = b""
            if kept and len(before[kept - 1].ulaw) != len(self.buffer.played[-1].ulaw):
                whole = len(self.buffer.played[-1].ulaw) // FRAME * FRAME  # cut mid-frame: that frame is unheard
                rest = before[kept - 1].ulaw[whole:]
            rest += b"".join(p.ulaw for p in before[kept:])
            self._unplayed = [rest[i : i + FRAME] for i in range(0, len(rest), FRAME)]  # 20 ms frames
            cut = self.buffer.clears[-1].cut
            self.heard[round(cut * RATE) :] = 0.0
            self.marks += [(e.at, e.name) for e in echoes]
            self.result.clears.append(at)
            self._pending_resume = True

    # ----------------------------------------------------------------- the run

    def events(self) -> list[Event]:
        """The agent's side, scripted: greeting text, then its audio in fast chunks, then final."""
        out: list[Event] = [CallStarted(0.0, "MZ1", "CA1"), TtsConnected(0.0)]
        if not self.s.speak:
            return out
        out += [AgentText(0.01, 0, "A long reply. " * 10), AgentDone(0.01, 0)]
        reply = self.s.reply or agent_voice()
        step = int(CHUNK_S * RATE) * 2
        for k, i in enumerate(range(0, len(reply), step)):
            out.append(TtsAudio(REPLY_AT + k * CHUNK_S / 5, "ctx-1", reply[i : i + step]))
        out.append(TtsFinal(REPLY_AT + (len(reply) // step + 1) * CHUNK_S / 5, "ctx-1"))
        return out

    def run(self) -> Result:
        scripted = self.events()
        frame_no = 1
        now = 0.0
        while True:
            frame_at = round(frame_no * FRAME_S, 6)
            if frame_at > self.s.duration:
                break
            arrives = self.arrivals[frame_no]
            candidates = [arrives]
            if scripted:
                candidates.append(scripted[0].at)
            deadline = self.call.next_deadline()
            if deadline is not None:
                candidates.append(max(deadline, now))
            due = self.buffer.next_mark_due()
            if due is not None:
                candidates.append(max(due, now))
            if self.marks:
                candidates.append(max(self.marks[0][0], now))
            now = min(candidates)
            if scripted and scripted[0].at <= now:
                self.handle(scripted.pop(0))
            elif self.marks and self.marks[0][0] <= now:
                self.handle(MarkPlayed(now, self.marks.pop(0)[1]))
            elif due is not None and due <= now:
                for echo in self.buffer.due_marks(now):
                    self.handle(MarkPlayed(now, echo.name))
            elif deadline is not None and deadline <= now and now < arrives:
                self.handle(Tick(now))
            else:
                self.handle(CallerAudio(arrives, self.line_frame(frame_at)))
                frame_no += 1
        return self.result

    def handle(self, event: Event) -> None:
        for action in self.call.handle(event):
            self.result.actions.append((event.at, action))
            if isinstance(action, SendMedia | SendMark | ClearPlayback):
                self.carry(event.at, action)
            elif isinstance(action, ReplyHeard) and action.interrupted:
                self._pending_resume = False  # given up: what follows is another reply
                if self.result.interrupted_at is None:
                    self.result.interrupted_at = event.at
            elif (isinstance(action, StartTurn) and action.turn > 0 and not action.tentative) or isinstance(
                    action, ConfirmTurn):
                self.result.turns.append(event.at)  # a turn taken: a tentative one counts once confirmed


def _arrivals(duration: float, jitter_ms: float, seed: int = 6) -> list[float]:
    """When each caller frame reaches the bridge: its end, plus up to ``jitter_ms`` of network delay,
    never before the frame ahead of it (a WebSocket keeps order, so a late frame holds up the next)."""
    count = int(duration / FRAME_S) + 2
    nominal = [round(k * FRAME_S, 6) for k in range(count)]
    if jitter_ms <= 0:
        return nominal
    late = np.random.default_rng(seed).uniform(0.0, jitter_ms / 1000, count)
    out: list[float] = []
    for at, extra in zip(nominal, late, strict=True):
        out.append(max(at + float(extra), out[-1] if out else 0.0))
    return out


def _shifted(heard: np.ndarray, lo: int, hi: int, d: int) -> np.ndarray:
    """``heard[lo - d : hi - d]``, zero before the call began."""
    out = np.zeros(hi - lo)
    a, b = lo - d, hi - d
    src = heard[max(0, a) : max(0, b)]
    out[len(out) - len(src) :] = src
    return out


def run(scenario: Scenario, settings: CallSettings | None = None) -> Result:
    return Line(scenario, settings).run()


# --------------------------------------------------------------------- sounds that are not speech


def white(dbfs: float, seconds: float, seed: int = 1) -> bytes:
    """White noise at an RMS of ``dbfs``: the very line noise ``bridge call --noise`` adds."""
    return noise(dbfs, seconds, seed)


def pink(dbfs: float, seconds: float, seed: int = 2) -> bytes:
    n = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    return pcm16(x / x.std() * 32768 * 10 ** (dbfs / 20))


def comfort_noise(seconds: float, seed: int = 3) -> bytes:
    """Shaped noise whose level jumps between -65 and -45 dBFS every 0.3-1.5 s, as a VoIP
    comfort-noise generator does when its background estimate updates."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    base = samples(pink(0.0, seconds, seed))
    level = np.zeros(n)
    i = 0
    while i < n:
        span = int(rng.uniform(0.3, 1.5) * RATE)
        level[i : i + span] = rng.uniform(-65, -45)
        i += span
    return pcm16(base * 10 ** (level / 20))


def clicks(per_second: float, seconds: float, dbfs: float = -6.0, seed: int = 4) -> bytes:
    """Sharp 1 ms clicks (a handset knocked, a bad connector) on a quiet line."""
    rng = np.random.default_rng(seed)
    x = samples(white(-60.0, seconds, seed))
    width = 8
    for p in range(int(0.05 * RATE), len(x) - width, int(RATE / per_second)):
        x[p : p + width] += 32768 * 10 ** (dbfs / 20) * np.hanning(width) * rng.choice([-1, 1])
    return pcm16(x)


def click(dbfs: float = -6.0) -> bytes:
    """One sharp 1 ms click and nothing else."""
    x = np.zeros(int(0.1 * RATE))
    x[40:48] = 32768 * 10 ** (dbfs / 20) * np.hanning(8)
    return pcm16(x)


DTMF = {"1": (697, 1209), "5": (770, 1336), "9": (852, 1477), "#": (941, 1477), "D": (941, 1633)}


def dtmf(keys: str, dbfs: float = -10.0, tone_s: float = 0.2, gap_s: float = 0.15) -> bytes:
    """Keypad tones in the audio (besides Twilio's ``dtmf`` events), ``dbfs`` RMS."""
    t = np.arange(int(tone_s * RATE)) / RATE
    out = []
    for key in keys:
        lo, hi = DTMF[key]
        x = np.sin(2 * math.pi * lo * t) + np.sin(2 * math.pi * hi * t)
        out.append(x / x.std() * 32768 * 10 ** (dbfs / 20))
        out.append(np.zeros(int(gap_s * RATE)))
    return pcm16(np.concatenate(out))


def cough(seconds: float = 0.2, dbfs: float = -12.0, seed: int = 5) -> bytes:
    """A burst of low-passed noise with a fast attack and a slower decay."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.convolve(rng.standard_normal(n), np.ones(4) / 4, mode="same")
    envelope = np.minimum(1.0, np.arange(n) / (0.01 * RATE)) * np.exp(-np.arange(n) / (0.4 * n))
    x *= envelope
    return pcm16(x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20))


def hum(seconds: float = 0.3, dbfs: float = -15.0) -> bytes:
    """A closed-mouth "mhm": a 120 Hz voice with a few harmonics, faded in and out."""
    t = np.arange(int(seconds * RATE)) / RATE
    x = sum(np.sin(2 * math.pi * 120 * k * t) / k for k in range(1, 8))
    x *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)
    return pcm16(x / np.sqrt(np.mean(x**2)) * 32768 * 10 ** (dbfs / 20))


def noises(seconds: float) -> dict[str, bytes]:
    """Everything a line carries that is not the caller talking."""
    keys = dtmf("159#D", -10.0) + b"\x00\x00" * int(0.5 * RATE)
    return {
        "digital silence": b"",
        "white noise -50 dBFS": white(-50.0, seconds),
        "white noise -40 dBFS": white(-40.0, seconds),
        "white noise -35 dBFS": white(-35.0, seconds),
        "pink noise -50 dBFS": pink(-50.0, seconds),
        "pink noise -40 dBFS": pink(-40.0, seconds),
        "pink noise -35 dBFS": pink(-35.0, seconds),
        "comfort noise -65..-45 dBFS": comfort_noise(seconds),
        "clicks 1/s": clicks(1, seconds),
        "clicks 5/s": clicks(5, seconds),
        "clicks 10/s": clicks(10, seconds),
        "DTMF keys -10 dBFS": (keys * int(seconds / (len(keys) / 2 / RATE) + 1))[: int(seconds * RATE) * 2],
        "DTMF keys -25 dBFS": gain((keys * 4)[: int(seconds * RATE) * 2], -15.0),
    }


def short_sounds() -> dict[str, bytes]:
    """What a caller makes without meaning to interrupt."""
    return {"cough 150 ms": cough(0.15), "cough 250 ms": cough(0.25), "mhm 300 ms": hum(0.3),
            "click": click()}


# --------------------------------------------------------------------- the conditions measured


ECHO_LEVELS = (-10.0, -20.0, -30.0)
ECHO_DELAYS = (40.0, 100.0, 180.0, 250.0)
BARGERS = ("caller_02.wav", "caller_03.wav", "caller_07.wav")
# At 0.9 s the agent has played 0.6 s: what the echo guard needs to learn the line with the shipped
# settings (``learn_ms`` at every delay up to ``max_delay_ms``); the later onsets find it learnt.
ONSETS = (0.9, 1.7, 3.9, 6.1)


@cache
def speakerphone() -> tuple[float, ...]:
    """A small loudspeaker and its microphone: 500-3000 Hz (windowed-sinc band-pass), scaled so
    the agent's voice comes back at the nominal echo level. Vowels heavy in low harmonics come back
    20-30 dB down, bright sounds 7-10 dB: no single loss describes this echo."""
    n = np.arange(-32, 33)

    def low_pass(hz: float) -> np.ndarray:
        return 2 * hz / RATE * np.sinc(2 * hz / RATE * n)

    taps = (low_pass(3000) - low_pass(500)) * np.hamming(len(n))
    voice = samples(agent_voice())
    taps *= math.sqrt(float(np.sum(voice**2)) / float(np.sum(np.convolve(voice, taps) ** 2)))
    return tuple(float(t) for t in taps)


def echo_only(level: float, delay: float, noise: bytes = b"", path: tuple[float, ...] = ()) -> Scenario:
    return Scenario(echo_db=level, delay_ms=delay, noise=noise, duration=14.0, echo_path=path)


def talk_over(
    name: str, onset: float, level: float | None, delay: float, caller_db: float = 0.0, path: tuple[float, ...] = ()
) -> Scenario:
    sound = Sound(onset, gain(load_wav(name), caller_db), name)
    return Scenario((sound,), echo_db=level, delay_ms=delay, duration=onset + 4.0, echo_path=path)
