"""Turn-taking, before and after: plain webrtcvad barge-in against the shipped detector.

    python -m bench.turntaking [--out bench/results/turntaking.md]

Every condition is played through `bridge.core.call.Call` on the simulated phone line of
`tests.turntaking` (Twilio's playback buffer, an echo of exactly what played, the caller's speech
from tests/audio, mu-law), once with each of two settings:

* **before**: webrtcvad alone decides, as barge-in worked without the turn-taking gates: no echo
  guard (``[echo] enabled = false``), no noise floor (``[vad] snr_db = 0``), no keypad-tone veto
  (``[vad] reject_tones = false``), hard barge-in (``[barge_in] confirm_ms = 0``);
* **after**: the built-in defaults, which ``config/bridge.toml`` repeats.

Everything else (webrtcvad mode, start/end windows, warm-up, playback lead) is the same on both
sides. The tables are printed and written as markdown; docs/vad-tuning.md quotes them. Takes
about half a minute.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from bridge.config import Settings
from bridge.core.audio import pcm_to_ulaw
from bridge.core.call import CallSettings
from bridge.server.factories import call_settings
from tests.turntaking import (
    BARGERS,
    ECHO_DELAYS,
    ECHO_LEVELS,
    ONSETS,
    RATE,
    Line,
    Result,
    Scenario,
    Sound,
    agent_voice,
    echo_only,
    noises,
    run,
    short_sounds,
    speakerphone,
    talk_over,
    white,
)

__all__ = ["after", "before", "main", "tables"]

RESULTS = Path(__file__).resolve().parent / "results" / "turntaking.md"
SHORT_AT = (1.5, 2.9, 4.3)  # where each short sound falls, once per run, over a five-second reply
SHORT_REPLY_S = 5.0
NOISE_REPLY_S = 2.0  # the agent talks 2 s, then the line carries only the noise for 10 s
JITTERS = (20.0, 40.0)


def after() -> CallSettings:
    """The shipped defaults, built the way the server builds them."""
    return call_settings(Settings())


def before() -> CallSettings:
    """webrtcvad alone: every gate of the turn-taking work switched off by configuration."""
    s = after()
    return dataclasses.replace(
        s,
        vad=dataclasses.replace(s.vad, snr_db=0.0, reject_tones=False),
        barge_in=dataclasses.replace(s.barge_in, confirm_ms=0),
        echo=dataclasses.replace(s.echo, enabled=False),
    )


def no_guard(s: CallSettings) -> CallSettings:
    return dataclasses.replace(s, echo=dataclasses.replace(s.echo, enabled=False))


# --------------------------------------------------------------------- helpers


def _p(values: list[float], q: float) -> int:
    return round(1000 * float(np.percentile(values, q, method="higher")))


def _p50_p95(values: list[float]) -> str:
    return f"{_p(values, 50)} / {_p(values, 95)}" if values else "-"


def _table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(head)
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


# --------------------------------------------------------------------- the conditions


def echo_rows(sides: dict[str, CallSettings]) -> list[list[object]]:
    """The agent talks for 14 s and hears only its own echo (on a quiet line, and on -40 dBFS hiss)."""
    rows: list[list[object]] = []
    noisy = white(-40.0, 15.0)
    for level in ECHO_LEVELS:
        for delay in ECHO_DELAYS:
            runs = {name: [run(echo_only(level, delay, noise), s) for noise in (b"", noisy)]
                    for name, s in sides.items()}
            rows.append([f"{level:.0f} dB, {delay:.0f} ms", 2,
                         *(sum(r.interrupted_at is not None for r in runs[n]) for n in sides),
                         sum(len(r.clears) for r in runs["after"])])
    runs = {name: [run(echo_only(level, delay, noise, speakerphone()), s)
                   for level in ECHO_LEVELS for delay in ECHO_DELAYS for noise in (b"", noisy)]
            for name, s in sides.items()}
    rows.append(["all 12, through a speakerphone (500-3000 Hz)", len(runs["after"]),
                 *(sum(r.interrupted_at is not None for r in runs[n]) for n in sides),
                 sum(len(r.clears) for r in runs["after"])])
    for jitter in JITTERS:
        runs = {name: [run(dataclasses.replace(echo_only(level, delay, noise), jitter_ms=jitter), s)
                       for level in ECHO_LEVELS for delay in ECHO_DELAYS for noise in (b"", noisy)]
                for name, s in sides.items()}
        rows.append([f"all 12, caller frames up to {jitter:.0f} ms late", len(runs["after"]),
                     *(sum(r.interrupted_at is not None for r in runs[n]) for n in sides),
                     sum(len(r.clears) for r in runs["after"])])
    return rows


def talk_over_rows(sides: dict[str, CallSettings]) -> list[list[object]]:
    """A caller cuts in over the echoing agent: three callers, four moments, every delay."""
    plain = {(name, onset): run(talk_over(name, onset, None, 0.0), sides["after"]).reaction(onset)
             for name in BARGERS for onset in ONSETS}
    unguarded = {(name, onset): run(talk_over(name, onset, None, 0.0), no_guard(sides["after"])).reaction(onset)
                 for name in BARGERS for onset in ONSETS}
    rows: list[list[object]] = []
    for caller_db in (0.0, -10.0):
        for level in (None, *ECHO_LEVELS):
            rows.append(_talk_over_row(sides, caller_db, level, unguarded if level is None else plain))
    for level in ECHO_LEVELS:
        rows.append(_talk_over_row(sides, 0.0, level, plain, speakerphone()))
    return rows


def _talk_over_row(sides: dict[str, CallSettings], caller_db: float, level: float | None,
                   paired: dict[tuple[str, float], float | None], path: tuple[float, ...] = ()) -> list[object]:
    cells: list[object] = []
    runs = 0
    for side, s in sides.items():
        cut = missed = 0
        reactions: list[float] = []
        slower: list[float] = []
        runs = 0
        for delay in ECHO_DELAYS if level is not None else (0.0,):
            for name in BARGERS:
                for onset in ONSETS:
                    r = run(talk_over(name, onset, level, delay, caller_db, path), s)
                    runs += 1
                    if r.interrupted_at is not None and r.interrupted_at < onset + s.vad.start_ms / 1000:
                        cut += 1  # stopped before start_ms of the caller: by its own echo
                        continue
                    missed += not r.committed(onset)
                    reaction = r.reaction(onset)
                    if reaction is None:
                        continue
                    reactions.append(reaction)
                    base = paired[(name, onset)]
                    if side == "after" and caller_db == 0.0 and base is not None:
                        slower.append(reaction - base)
        cells += [cut, missed, _p50_p95(reactions)] if side == "before" else [missed, _p50_p95(reactions)]
        if side == "after":
            cells.append(f"{_p(slower, 95)} / {_p(slower, 100)}" if slower else "-")
    echo = "no echo" if level is None else f"echo {level:.0f} dB"
    if path:
        echo = f"speakerphone {echo}"
    return [f"caller {caller_db:+.0f} dB, {echo}", runs, *cells]


def noise_rows(sides: dict[str, CallSettings]) -> list[list[object]]:
    """The agent says two seconds, then the line carries only noise for ten."""
    reply = agent_voice()[: int(NOISE_REPLY_S * RATE) * 2]
    rows: list[list[object]] = []
    for label, noise in noises(12.0).items():
        lines = {n: Line(Scenario(noise=noise, duration=12.0, reply=reply), s) for n, s in sides.items()}
        runs = {n: line.run() for n, line in lines.items()}
        rows.append([label, *(int(runs[n].interrupted_at is not None) for n in sides),
                     *(len(runs[n].turns) + _still_talking(lines[n]) for n in sides), len(runs["after"].clears)])
    return rows


def _still_talking(line: Line) -> int:
    """1 if the detector still hears the caller when the call ends: a turn that never ends, the agent
    waiting for good (what webrtcvad makes of clicks or tones that keep coming)."""
    return int(line.call._listener.detector.speaking)  # the bench reads the core's detector directly


def short_sound_rows(sides: dict[str, CallSettings]) -> list[list[object]]:
    """A cough, an "mhm", a click over a five-second reply, at three moments (one per run)."""
    reply = agent_voice()[: int(SHORT_REPLY_S * RATE) * 2]
    whole = pcm_to_ulaw(reply)
    rows: list[list[object]] = []
    for label, sound in short_sounds().items():
        cells: list[object] = []
        for side, s in sides.items():
            lines = [Line(Scenario((Sound(at, sound, label, speech=False),), duration=9.0, reply=reply), s)
                     for at in SHORT_AT]
            results = [line.run() for line in lines]
            heard = [b"".join(p.ulaw for p in line.buffer.played) for line in lines]
            lost = max((len(whole) - len(h)) / 8 for h in heard)
            stopped = sum(r.interrupted_at is not None for r in results)
            if side == "before":
                cells += [stopped, f"{lost:.0f} ms"]
                continue
            exact = sum(_resumed_exactly(r, h, whole) for r, h in zip(results, heard, strict=True))
            pauses = sum(len(r.clears) for r in results)
            longest = max((x for r in results for x in r.silences), default=0.0)
            cells += [stopped, pauses, f"{exact} / {pauses}", f"{round(1000 * longest)} ms" if pauses else "-",
                      f"{lost:.0f} ms"]
        rows.append([f"{label} (x{len(SHORT_AT)})", *cells])
    return rows


def _resumed_exactly(r: Result, heard: bytes, whole: bytes) -> int:
    """Resumes whose first frame was the first the caller had not heard, with the reply then heard
    whole: not a frame lost, none played twice."""
    exact = all(first == unheard for first, unheard in r.resumes) and heard == whole
    return len(r.resumes) if exact else 0


# --------------------------------------------------------------------- the report


def tables(progress: Callable[[str], None] = lambda _: None) -> list[str]:
    sides = {"before": before(), "after": after()}
    out: list[str] = []
    progress("echo only")
    out += ["### The agent's own echo, nothing else on the line", "",
            "False barge-ins: the agent stopped for good. Each condition runs twice (quiet line, "
            "-40 dBFS white noise); the jitter rows run all twelve, inbound frames arriving late.", ""]
    out += _table(["echo level, delay", "runs", "false barge-ins before", "false barge-ins after",
                   "pauses after (resumed)"], echo_rows(sides))
    progress("talk over")
    out += ["", "### A caller talking over the agent", "",
            "Reaction: caller's onset to the `clear` that silences the agent, p50 / p95 in ms. "
            "Slower: after's reaction minus the same words at the same moment on a line without "
            "echo (p95 / max, ms; for the no-echo row, minus the same line with the guard off). "
            "Cut: the agent's echo had stopped it before the caller could have (within `start_ms` of "
            "the onset).", ""]
    out += _table(["condition", "runs", "cut before", "missed before", "reaction before", "missed after",
                   "reaction after", "slower than no guard"], talk_over_rows(sides))
    progress("noise")
    out += ["", "### Noise on the line", "",
            "The agent talks 2 s, then the line carries only the noise for 10 s. False barge-in: the "
            "agent stopped; phantom turn: a caller turn nobody spoke, or one still open at the end (the "
            "agent waits for good).", ""]
    out += _table(["line", "false barge-in before", "false barge-in after", "phantom turns before",
                   "phantom turns after", "pauses after"], noise_rows(sides))
    progress("short sounds")
    out += ["", "### Short sounds over the agent", "",
            f"Each sound at {', '.join(f'{t:g}' for t in SHORT_AT)} s of a {SHORT_REPLY_S:g} s reply, one per run. "
            "Lost: the most reply audio the caller never heard in one run. Exact: resumes that went "
            "on from the first frame the caller had not heard, with the whole reply then heard once.", ""]
    out += _table(["sound", "stopped before", "lost before", "stopped after", "pauses after", "exact resumes",
                   "longest pause", "lost after"], short_sound_rows(sides))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.turntaking", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write (default: %(default)s)")
    a = p.parse_args(argv)
    text = "\n".join(tables(lambda what: print(f"measuring: {what}", flush=True))) + "\n"
    print(text, end="")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
