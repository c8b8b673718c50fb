"""Echo cancellation on a simulated phone line: how much echo it removes, what it leaves of the
caller, what it costs, and what it does for barge-in.

    python -m bench.aec [--out FILE]

Needs the ``aec`` extra (``pip install pywebrtc-audio``). Deterministic (seeded noise, simulated
time), about a minute. The line: the agent's reply (about 13 s of speech in four voices from
tests/audio, or a sustained 440 Hz tone, both peaking at -3 dBFS) played in 20 ms frames as the core
paces them; the phone hears it mu-law coded; the echo path adds a room's reverberation, optionally
a clipping loudspeaker, a delay and a loss; the caller's speech and line noise join it and the
line is mu-law coded again on its way back, as Twilio's inbound stream. Caller frames arrive every
20 ms, stamped with their arrival time.

Tables (markdown, printed; ``--out`` also writes them):

* ERLE: echo return loss enhancement, raw echo over what is left of it, in dB, over the frames that
  hold echo, from 2 s into the reply (the canceller converges first); canceller ``mode = "on"``;
* double talk: a caller 10 dB under the agent talking over the echo: the caller's level after the
  canceller minus before (whole utterance, and the median frame);
* CPU per call-minute with ``mode = "auto"``: a minute-long call where the agent talks 39 s, with
  and without echo on the line (-65 dBFS of hiss unless stated);
* barge-in through the real `bridge.core.bargein.Listener` fed the raw line and the cleaned one.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bridge.core.aec import AecConfig, EchoCanceller, load_engine
from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.core.bargein import Listener
from bridge.core.vad import SpeechConfirmed, SpeechStarted, VadConfig
from tests.support import load_wav
from tests.turntaking import BARGERS, agent_voice

__all__ = ["Echo", "main", "tables"]

RATE = 8000
FRAME = 160
FRAME_S = 0.02
AGENT_AT = 0.5  # the agent's first frame plays here
LEAD_S = 0.2  # frames are sent (and enter the reference) this far ahead of playing
CONVERGED_S = 2.0  # ERLE is measured from this far into the reply
ONSETS = (0.9, 3.9, 6.1)  # the caller cuts in this far into the reply (the first: before it has settled)
BARGE_WINDOW = 2.0  # a barge-in not confirmed this long after the onset is missed


@dataclass(frozen=True)
class Echo:
    """The echo path: delay from play time to arrival, loss, reverberation, non-linearity,
    line noise, inbound jitter; and optionally another path from ``change_at`` (seconds into
    the reply) on."""

    delay_ms: float = 120.0
    db: float = -10.0
    room_ms: float = 30.0  # reverberation time constant of the room's impulse response
    clip: bool = False  # the loudspeaker clips at a quarter of full scale
    noise_dbfs: float | None = None
    jitter_ms: float = 0.0
    change_at: float | None = None
    then: Echo | None = None


def _ulaw(x: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
    return np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(pcm)), "<i2").astype(np.float64)


def _rms(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.square(x)))) or 1.0


def _room(ms: float, seed: int = 7) -> np.ndarray:
    """A direct path and a reverberant tail, 10 dB weaker in all, decaying with ``ms``."""
    n = max(1, round(3 * ms / 1000 * RATE))
    tail = np.random.default_rng(seed).standard_normal(n) * np.exp(-np.arange(n) / (ms / 1000 * RATE))
    tail *= math.sqrt(0.1 / float(np.sum(tail**2)))
    return np.concatenate(([1.0], tail))


def _path(far: np.ndarray, echo: Echo) -> np.ndarray:
    """What one echo path makes of the far end (on the reply's timeline, not yet delayed)."""
    heard = _ulaw(far)  # the phone plays what the carrier decoded
    if echo.clip:
        heard = np.clip(heard * 4.0, -8192.0, 8192.0)
    out = np.convolve(heard, _room(echo.room_ms))[: len(far)]
    return out * (10 ** (echo.db / 20) * _rms(far) / _rms(out))


def _delayed(x: np.ndarray, ms: float) -> np.ndarray:
    d = round(ms / 1000 * RATE)
    out = np.zeros(len(x))
    out[d:] = x[: len(x) - d]
    return out


def echo_line(agent: np.ndarray, echo: Echo | None, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The far end on the call's timeline, and the echo it puts on the line (float, unquantised)."""
    far = np.zeros(round(seconds * RATE))
    start = round(AGENT_AT * RATE)
    far[start : start + len(agent)] = agent[: len(far) - start]
    if echo is None:
        return far, np.zeros(len(far))
    line = _delayed(_path(far, echo), echo.delay_ms)
    if echo.change_at is not None and echo.then is not None:
        cut = round((AGENT_AT + echo.change_at) * RATE)
        line[cut:] = _delayed(_path(far, echo.then), echo.then.delay_ms)[cut:]
    return far, line


def _arrivals(frames: int, jitter_ms: float, seed: int = 3) -> np.ndarray:
    """When each caller frame arrives: at its end, or up to ``jitter_ms`` later, in order."""
    at = (np.arange(frames) + 1) * FRAME_S
    if jitter_ms:
        at += np.random.default_rng(seed).uniform(0, jitter_ms / 1000, frames)
        at = np.maximum.accumulate(at)
    return at


def stream(far: np.ndarray, line: np.ndarray, aec: EchoCanceller | None, listener: Listener | None = None,
           jitter_ms: float = 0.0) -> tuple[np.ndarray, list[object], float]:
    """Play the call: frames of ``far`` enter the references ``LEAD_S`` ahead of playing, the
    line's frames arrive, the canceller cleans them (told the ERL the listener's echo guard
    learnt, and handing it the residual echo's loss when it engages, as the core does), the
    listener hears them. The cleaned line, the listener's changes, and the canceller's CPU
    seconds (its `played` and `process` alone)."""
    frames = len(line) // FRAME
    played = [(k * FRAME_S, far[k * FRAME : (k + 1) * FRAME].astype("<i2").tobytes()) for k in range(frames)]
    played = [(t, f) for t, f in played if t >= AGENT_AT - 1e-9 and np.any(f)]
    out = np.zeros(frames * FRAME)
    changes: list[object] = []
    cpu = 0.0
    k = 0
    if aec is not None and listener is not None:
        aec.behind(listener)  # the listener hears the cleaned line beside the raw one, as in the core
    for j, at in enumerate(_arrivals(frames, jitter_ms)):
        t0 = time.process_time()
        while k < len(played) and played[k][0] < (j + 1) * FRAME_S + LEAD_S:
            if aec is not None:
                aec.played(played[k][1], played[k][0])
            if listener is not None:
                t1 = time.process_time()
                listener.played(played[k][1], played[k][0])
                t0 += time.process_time() - t1
            k += 1
        pcm = line[j * FRAME : (j + 1) * FRAME].astype("<i2").tobytes()
        if aec is None:
            clean = pcm
        elif listener is not None:  # as the core wires them (`EchoCanceller.clean`)
            clean = aec.clean(pcm, float(at), listener.gate)
        else:
            clean = aec.process(pcm, float(at))
        cpu += time.process_time() - t0
        out[j * FRAME : (j + 1) * FRAME] = np.frombuffer(clean, "<i2")
        if listener is not None:
            changes += listener.feed(pcm, float(at), aec.line if aec is not None and aec.cleaning else None)
    return out, changes, cpu


def _agent(kind: str) -> np.ndarray:
    if kind == "tone":
        n = np.arange(13 * RATE)
        return np.round(32768 * 10 ** (-3 / 20) * np.sin(2 * np.pi * 440 * n / RATE))
    return np.frombuffer(agent_voice(), "<i2").astype(np.float64)


def _caller(name: str, db: float) -> np.ndarray:
    return np.frombuffer(load_wav(name), "<i2").astype(np.float64) * 10 ** (db / 20)


def _noise(echo: Echo | None, n: int) -> np.ndarray:
    if echo is None or echo.noise_dbfs is None:
        return np.zeros(n)
    return np.random.default_rng(5).standard_normal(n) * 32768 * 10 ** (echo.noise_dbfs / 20)


def _frame_db(x: np.ndarray) -> np.ndarray:
    f = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    return 10 * np.log10(np.mean(f**2, axis=1) / 32768.0**2 + 1e-12)


def erle(echo: Echo, kind: str = "speech", since: float = CONVERGED_S, until: float | None = None) -> float:
    """Raw over residual echo (dB) in the frames that hold echo, ``since``..``until`` s into the reply."""
    agent = _agent(kind)
    far, line = echo_line(agent, echo, AGENT_AT + len(agent) / RATE + 0.5)
    raw = _ulaw(line + _noise(echo, len(line)))
    out, _, _ = stream(far, raw, EchoCanceller(AecConfig(mode="on")), jitter_ms=echo.jitter_ms)
    levels = _frame_db(line)
    t = (np.arange(len(levels)) + 0.5) * FRAME_S - AGENT_AT
    hold = (levels > -55) & (t >= since) & (t < (until if until is not None else math.inf))
    f_raw, f_out = (x[: len(levels) * FRAME].reshape(-1, FRAME)[hold] for x in (raw, out))
    return 10 * math.log10(float(np.sum(f_raw**2)) / max(float(np.sum(f_out**2)), 1.0))


def double_talk(echo: Echo, caller: str = "caller_02.wav", at: float = 4.0) -> tuple[float, float]:
    """A caller 10 dB under the agent from ``at`` s into the reply: their level after minus before
    the canceller, over the whole utterance and for the median frame (dB)."""
    agent = _agent("speech")
    far, line = echo_line(agent, echo, AGENT_AT + len(agent) / RATE + 0.5)
    voice = _caller(caller, -10.0)
    start = round((AGENT_AT + at) * RATE)
    talk = np.zeros(len(line))
    talk[start : start + len(voice)] = voice
    raw = _ulaw(line + talk + _noise(echo, len(line)))
    out, _, _ = stream(far, raw, EchoCanceller(AecConfig(mode="on")), jitter_ms=echo.jitter_ms)
    seg = slice(start, start + len(voice) // FRAME * FRAME)
    mine, after = _frame_db(talk[seg]), _frame_db(out[seg])
    loud = mine > mine.max() - 30
    whole = 10 * math.log10(float(np.sum(out[seg] ** 2)) / float(np.sum(talk[seg] ** 2)))
    return whole, float(np.median((after - mine)[loud]))


def cpu_per_minute(echo: Echo | None, mode: str = "auto", noise_dbfs: float = -65.0) -> tuple[float, int]:
    """A minute-long call, the agent talking 13 s in every 20 (39 s): the canceller's CPU seconds
    (`played` and `process`, policy included; not the listener's; the least of three runs), and
    the frames it ran on."""
    reply = _agent("speech")
    far = np.zeros(60 * RATE)
    for turn in range(3):
        start = round((turn * 20 + AGENT_AT) * RATE) - round(AGENT_AT * RATE)
        far[start : start + len(reply)] = reply
    agent = far[: len(far) - round(AGENT_AT * RATE)]
    far, line = echo_line(agent, echo, 60.0)
    raw = _ulaw(line + np.random.default_rng(9).standard_normal(len(line)) * 32768 * 10 ** (noise_dbfs / 20))
    runs = []
    for _ in range(3):  # the least of three: the machine's other load only ever adds
        aec = EchoCanceller(AecConfig(mode=mode))
        runs.append(stream(far, raw, aec, Listener(VadConfig()))[2])
    return min(runs), aec.frames


# --------------------------------------------------------------------- barge-in through the Listener


@dataclass(frozen=True)
class Outcome:
    cut: bool  # a sound was confirmed before the caller spoke: the echo stopped the agent
    reaction: float | None  # onset to the start of the sound that was confirmed; None: missed
    starts: int  # sounds started (pauses of the agent), echo-only runs


def listen(kind: str, echo: Echo, cleaned: bool, caller: str | None = None, onset: float = 0.0,
           seconds: float | None = None) -> Outcome:
    agent = _agent(kind)
    total = seconds if seconds is not None else AGENT_AT + onset + BARGE_WINDOW + 1.0
    far, line = echo_line(agent, echo, total)
    at = AGENT_AT + onset
    if caller is not None:
        voice = _caller(caller, -10.0)
        start = round(at * RATE)
        line[start : start + len(voice)] += voice[: len(line) - start]
    raw = _ulaw(line + _noise(echo, len(line)))
    aec = EchoCanceller(AecConfig(mode="auto")) if cleaned else None
    _, changes, _ = stream(far, raw, aec, Listener(VadConfig()), echo.jitter_ms)
    confirmed = [c.onset for c in changes if isinstance(c, SpeechConfirmed)]
    starts = [c for c in changes if isinstance(c, SpeechStarted)]
    if caller is None:
        return Outcome(bool(confirmed), None, len(starts))
    cut = any(o < at - 0.05 for o in confirmed)
    hits = [c.at - at for c in starts if c.onset >= at - 0.05 and c.onset in confirmed]
    hits = [h for h in hits if h <= BARGE_WINDOW]
    return Outcome(cut, min(hits) if hits else None, len(starts))


def _p(values: list[float], q: float) -> str:
    return str(round(1000 * float(np.percentile(values, q, method="higher")))) if values else "-"


def barge_rows() -> list[list[object]]:
    """Every caller, delay and onset; the first onset falls before auto mode has judged the call
    (the probe's first half second of agent audio) or just after, the others on a settled call."""
    rows: list[list[object]] = []
    for kind in ("speech", "tone"):
        for level in (-10.0, -6.0):
            for onsets, when in ((ONSETS[:1], "first second"), (ONSETS[1:], "later")):
                cells: list[object] = []
                runs = 0
                for cleaned in (False, True):
                    outs = [listen(kind, Echo(delay_ms=d, db=level), cleaned, name, onset)
                            for d in (40.0, 120.0, 250.0) for name in BARGERS for onset in onsets]
                    runs = len(outs)
                    reactions = [o.reaction for o in outs if o.reaction is not None and not o.cut]
                    cells += [sum(o.cut for o in outs), sum(o.reaction is None and not o.cut for o in outs),
                              f"{_p(reactions, 50)} / {_p(reactions, 95)}"]
                rows.append([f"{kind}, echo {level:.0f} dB, onset {when}", runs, *cells])
    return rows


def echo_only_rows() -> list[list[object]]:
    rows: list[list[object]] = []
    for kind in ("speech", "tone"):
        for level in (-10.0, -20.0, -30.0):
            cells: list[object] = []
            for cleaned in (False, True):
                outs = [listen(kind, Echo(delay_ms=d, db=level), cleaned, seconds=AGENT_AT + 13.5)
                        for d in (40.0, 120.0, 250.0)]
                cells += [sum(o.cut for o in outs), sum(o.starts for o in outs)]
            rows.append([f"{kind}, echo {level:.0f} dB, 40/120/250 ms", 3, *cells])
    return rows


# --------------------------------------------------------------------- the report


def erle_rows() -> list[list[object]]:
    base = Echo()
    conditions: list[tuple[str, Echo, str]] = [
        *((f"speech, -10 dB, {d:.0f} ms", replace(base, delay_ms=d), "speech") for d in (40.0, 120.0, 250.0, 300.0)),
        *((f"speech, {db:.0f} dB, 120 ms", replace(base, db=db), "speech") for db in (0.0, -6.0, -20.0, -30.0)),
        ("tone 440 Hz, -10 dB, 120 ms", base, "tone"),
        ("speech, -10 dB, 120 ms, room tail 150 ms", replace(base, room_ms=150.0), "speech"),
        ("speech, -10 dB, 120 ms, clipping loudspeaker", replace(base, clip=True), "speech"),
        ("speech, -10 dB, 120 ms, line noise -50 dBFS", replace(base, noise_dbfs=-50.0), "speech"),
        ("speech, -10 dB, 120 ms, frames up to 20 ms late", replace(base, jitter_ms=20.0), "speech"),
        ("speech, -10 dB, 120 ms, frames up to 40 ms late", replace(base, jitter_ms=40.0), "speech"),
    ]
    rows: list[list[object]] = [[label, f"{erle(echo, kind):.1f}"] for label, echo, kind in conditions]
    moved = replace(base, change_at=6.0, then=replace(base, delay_ms=200.0, db=-6.0))
    rows.append(["path changes at 6 s (120 → 200 ms, -10 → -6 dB): first second after",
                 f"{erle(moved, since=6.0, until=7.0):.1f}"])
    rows.append(["the same, from 1 s after the change on", f"{erle(moved, since=7.0):.1f}"])
    return rows


def _table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(head)
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def tables() -> list[str]:
    out = ["### Echo removed (ERLE, dB)", ""]
    out += _table(["echo path", "ERLE dB"], erle_rows())
    out += ["", "### The caller in double talk (caller 10 dB under the agent)", ""]
    talk = [[f"echo {db:.0f} dB, {d:.0f} ms", *(f"{v:+.1f}" for v in double_talk(Echo(delay_ms=d, db=db)))]
            for db in (-10.0, -6.0, -20.0) for d in (40.0, 120.0, 250.0)]
    out += _table(["echo", "caller level change, whole utterance dB", "median frame dB"], talk)
    out += ["", "### CPU per call-minute (agent talking 39 s of 60)", ""]
    cpu = []
    for label, echo, mode, noise in (
        ("echo -10 dB, 120 ms", Echo(), "auto", -65.0), ("echo -30 dB, 120 ms", Echo(db=-30.0), "auto", -65.0),
        ("no echo", None, "auto", -65.0), ("no echo, white noise -40 dBFS", None, "auto", -40.0),
        ("echo -10 dB, 120 ms, mode on", Echo(), "on", -65.0), ("no echo, mode on", None, "on", -65.0),
    ):
        seconds, frames = cpu_per_minute(echo, mode, noise)
        cpu.append([label, f"{seconds:.3f}", f"{frames * FRAME_S:.1f}"])
    out += _table(["call", "CPU s / call-minute", "audio s cancelled"], cpu)
    out += ["", "### Barge-in over the echo: caller 10 dB under the agent, raw line vs cleaned", ""]
    out += _table(["agent's signal, echo", "runs", "cut raw", "missed raw", "reaction raw p50 / p95 ms",
                   "cut cleaned", "missed cleaned", "reaction cleaned p50 / p95 ms"], barge_rows())
    out += ["", "### The echo alone (13 s of the agent, nothing else on the line)", ""]
    out += _table(["agent's signal, echo", "runs", "false barge-ins raw", "pauses raw",
                   "false barge-ins cleaned", "pauses cleaned"], echo_only_rows())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.aec", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="also write the markdown tables here")
    a = p.parse_args(argv)
    if load_engine(RATE) is None:
        print("pywebrtc-audio is not installed: pip install 'bridge[aec]'")
        return 1
    started = time.perf_counter()
    text = "\n".join(tables()) + "\n"
    print(text, end="")
    print(f"({time.perf_counter() - started:.0f} s)")
    if a.out is not None:
        a.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
