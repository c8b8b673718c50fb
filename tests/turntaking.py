"""A phone line for turn-taking tests: the core, Twilio's playback buffer, an echo path and a caller.

`run` plays one `Scenario` through `bridge.call.Call` in simulated time. The agent's reply
arrives as TTS audio; every frame the core sends goes into Twilio's playback model
(`bridge.simulator.PlaybackBuffer`: plays in order, ``clear`` drops what has not started, marks
echo when their audio has played); what it *plays* comes back down the line ``delay_ms`` later
and ``echo_db`` quieter, summed with the caller's voice and the line noise, mu-law coded like
Twilio's inbound stream, in 20 ms frames. So the echo is exactly the audio the caller heard,
including what a pause cut off and where a resume picked up.

Only the core's public surface is used, so the same file measures an older core for the
"before" columns: ``python -m tests.turntaking`` prints the table in the issue's note.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from bridge.actions import Action, ClearPlayback, ReplyHeard, SendMark, SendMedia, StartTurn
from bridge.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.call import Call, CallSettings
from bridge.events import (
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
from bridge.simulator import PlaybackBuffer
from tests.support import load_wav

RATE = 8000
FRAME_S = 0.02
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
            x += _shifted(self.heard, lo, hi, d) * 10 ** (self.s.echo_db / 20)
        return ulaw_to_pcm(pcm_to_ulaw(pcm16(x)))

    def carry(self, at: float, action: Action) -> None:
        """What Twilio does with each phone action."""
        if isinstance(action, SendMedia):
            if self._pending_resume:
                self.result.resumes.append((action.ulaw, self._unplayed[0] if self._unplayed else b""))
                self.result.silences.append(at - self.result.clears[-1])
                self._pending_resume = False
            self.buffer.push_audio(at, action.ulaw)
            piece = self.buffer.played[-1]
            start = round(piece.start * RATE)
            pcm = samples(ulaw_to_pcm(piece.ulaw))
            self.heard[start : start + len(pcm)] = pcm[: max(0, len(self.heard) - start)]
            self.result.media += 1
        elif isinstance(action, SendMark):
            self.buffer.push_mark(at, action.name)
        elif isinstance(action, ClearPlayback):
            before = list(self.buffer.played)
            echoes = self.buffer.clear(at)
            kept = len(self.buffer.played)
            self._unplayed = [p.ulaw for p in before[kept:]] if kept < len(before) else []
            if kept and len(before[kept - 1].ulaw) != len(self.buffer.played[-1].ulaw):
                self._unplayed.insert(0, before[kept - 1].ulaw)  # cut mid-frame: its whole frame is unheard
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
            candidates = [frame_at]
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
            elif deadline is not None and deadline <= now and now < frame_at:
                self.handle(Tick(now))
            else:
                self.handle(CallerAudio(frame_at, self.line_frame(frame_at)))
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
            elif isinstance(action, StartTurn) and action.turn > 0:
                self.result.turns.append(event.at)


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
    rng = np.random.default_rng(seed)
    return pcm16(rng.standard_normal(int(seconds * RATE)) * 32768 * 10 ** (dbfs / 20))


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


# --------------------------------------------------------------------- the table


ECHO_LEVELS = (-10.0, -20.0, -30.0)
ECHO_DELAYS = (40.0, 100.0, 180.0, 250.0)
BARGERS = ("caller_02.wav", "caller_03.wav", "caller_07.wav")
ONSETS = (0.9, 1.7, 3.9, 6.1)  # the first two come before the echo guard has learnt the line
LEARNT_AFTER = 3.0


def echo_only(level: float, delay: float, noise: bytes = b"") -> Scenario:
    return Scenario(echo_db=level, delay_ms=delay, noise=noise, duration=14.0)


def talk_over(name: str, onset: float, level: float | None, delay: float, caller_db: float = 0.0) -> Scenario:
    sound = Sound(onset, gain(load_wav(name), caller_db), name)
    return Scenario((sound,), echo_db=level, delay_ms=delay, duration=onset + 4.0)


def _ms(values: list[float]) -> str:
    ms = sorted(round(1000 * v) for v in values)
    return f"{ms[len(ms) // 2]} / {ms[-1]}" if ms else "-"


def measure(settings: Callable[[], CallSettings | None]) -> list[str]:
    """Table rows: the agent alone with its echo, then a caller talking over it."""
    rows = []
    for level in ECHO_LEVELS:
        results = [run(echo_only(level, delay, noise), settings()) for delay in ECHO_DELAYS
                   for noise in (b"", white(-40.0, 15.0))]
        barges = sum(r.interrupted_at is not None for r in results)
        pauses = sum(len(r.clears) for r in results)
        rows.append(f"| agent alone, echo {level:.0f} dB | {len(results)} | {barges} | {pauses} |")
    plain = {(name, onset): run(talk_over(name, onset, None, 0.0), settings()).reaction(onset)
             for name in BARGERS for onset in ONSETS}
    for caller_db in (0.0, -10.0):
        for level in (None, *ECHO_LEVELS):
            rows.append(_talk_over_row(settings, caller_db, level, plain))
    return rows


def _talk_over_row(settings: Callable[[], CallSettings | None], caller_db: float, level: float | None,
                   plain: dict[tuple[str, float], float | None]) -> str:
    runs_ = cut = missed = 0
    early: list[float] = []
    late: list[float] = []
    worse: list[float] = []
    for delay in ECHO_DELAYS if level is not None else (0.0,):
        for name in BARGERS:
            for onset in ONSETS:
                r = run(talk_over(name, onset, level, delay, caller_db), settings())
                runs_ += 1
                if r.interrupted_at is not None and r.interrupted_at < onset:
                    cut += 1  # the echo had already stopped the agent
                    continue
                reaction = r.reaction(onset)
                missed += not r.committed(onset)
                if reaction is None:
                    continue
                (late if onset > LEARNT_AFTER else early).append(reaction)
                base = plain[(name, onset)]
                if onset > LEARNT_AFTER and base is not None and caller_db == 0.0:
                    worse.append(reaction - base)
    echo = "no echo" if level is None else f"echo {level:.0f} dB"
    slower = f"{round(1000 * max(worse))}" if worse else "-"
    return (f"| caller {caller_db:+.0f} dB, {echo} | {runs_} | {cut} | {missed} | {_ms(early)} | {_ms(late)} "
            f"| {slower} |")


def measure_noise(settings: Callable[[], CallSettings | None]) -> list[tuple[str, int, int, int, int]]:
    """Rows of (condition, false pauses while the agent talks, false barge-ins, phantom turns after it,
    the longest pause that resumed)."""
    rows = []
    short_reply = agent_voice()[: int(2.0 * RATE) * 2]
    for label, noise in noises(12.0).items():
        r = run(Scenario(noise=noise, duration=12.0, reply=short_reply), settings())
        interrupted = int(r.interrupted_at is not None)
        rows.append((label, len(r.clears), interrupted, len(r.turns), _longest(r.silences)))
    for label, sound in short_sounds().items():
        pauses = barges = turns = 0
        silences: list[float] = []
        for at in (1.5, 2.9, 4.3):
            r = run(Scenario((Sound(at, sound, label, speech=False),), duration=8.0), settings())
            pauses, barges = pauses + len(r.clears), barges + int(r.interrupted_at is not None)
            turns += len(r.turns)
            silences += r.silences
        rows.append((f"{label} over the agent (x3)", pauses, barges, turns, _longest(silences)))
    return rows


def _longest(silences: list[float]) -> str:
    return f"{round(1000 * max(silences))} ms" if silences else "-"


def _main(argv: Sequence[str]) -> None:
    hard = "--hard" in argv
    noguard = "--no-guard" in argv

    def settings() -> CallSettings | None:
        if not (hard or noguard):
            return None
        from bridge.bargein import BargeInConfig
        from bridge.echo import EchoConfig

        return CallSettings(barge_in=BargeInConfig(confirm_ms=0 if hard else 250),
                            echo=EchoConfig(enabled=not noguard))

    if "--noise" in argv:
        for row in measure_noise(settings):
            print("| " + " | ".join(map(str, row)) + " |")
        return
    for row in measure(settings):
        print(row)

if __name__ == "__main__":
    _main(sys.argv[1:])
