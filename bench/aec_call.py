"""The echo canceller as the call runs it: barge-in, false barge-ins and what the speech-to-text
gets, through `bridge.core.call.Call`, with ``[aec] mode`` off against auto.

    python -m bench.aec_call [--out bench/results/aec-call.md]

Needs the ``aec`` extra (``pip install pywebrtc-audio``). Every run is a whole call on the
simulated phone line of `tests.turntaking` (Twilio's playback buffer, an echo of exactly what
played, the caller's speech from tests/audio, mu-law both ways), so the canceller gets the played
frames and clears from the playout and its output goes to the listener and the recorder, as on a
real call; the rest of the settings are the shipped defaults. `bench.aec` measures the canceller
alone (ERLE, CPU); this one measures what a caller notices. Deterministic; a few minutes.

Tables:

* a caller talking over the agent (speech, or a sustained 440 Hz tone at -12 dBFS as the agent's
  audio): missed barge-ins (none within 2 s of the onset), reaction (onset to the ``clear``)
  p50 / worst, split into onsets in the first second of the call's first reply (before auto
  mode has judged the call) and later ones;
* the agent's echo alone (14 s): false barge-ins and pauses;
* what the speech-to-text gets for an interruption: the level of what the recorder is given
  (utterances are cut from it) over the agent's echo alone before the caller's onset, and over
  the caller's words, with the canceller against without.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bridge.config import Settings
from bridge.core.aec import AecConfig, load_engine
from bridge.core.call import CallSettings
from bridge.server.factories import call_settings
from tests.core.test_aec_call import level_db, recorded
from tests.support import load_wav, tone
from tests.turntaking import BARGERS, ECHO_DELAYS, ONSETS, RATE, Result, Scenario, echo_only, run, talk_over

__all__ = ["main", "tables"]

RESULTS = Path(__file__).resolve().parent / "results" / "aec-call.md"
TONE = tone(440.0, 14.0, level=0.25)  # the agent's audio when it is a held note (hold music, a beep)
FIRST = (ONSETS[0],)  # 0.9 s: the first reply's first second
LATER = ONSETS[1:]


def sides() -> dict[str, CallSettings]:
    """The shipped defaults (as the server builds them), with the canceller off and on auto."""
    s = call_settings(Settings())
    return {"off": dataclasses.replace(s, aec=AecConfig(mode="off")),
            "auto": dataclasses.replace(s, aec=dataclasses.replace(s.aec, mode="auto"))}


def _as(scenario: Scenario, agent: str) -> Scenario:
    return scenario if agent == "speech" else dataclasses.replace(scenario, reply=TONE)


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{round(1000 * float(np.median(values)))} / {round(1000 * max(values))}"


def _talk(agent: str, caller_db: float, level: float | None, onsets: Iterable[float], s: CallSettings) -> list[object]:
    missed = 0
    reactions: list[float] = []
    runs = 0
    for delay in ECHO_DELAYS if level is not None else (0.0,):
        for name in BARGERS:
            for onset in onsets:
                r = run(_as(talk_over(name, onset, level, delay, caller_db), agent), s)
                runs += 1
                missed += not r.committed(onset)
                if (reaction := r.reaction(onset)) is not None:
                    reactions.append(reaction)
    return [runs, missed, _ms(reactions)]


def talk_rows() -> list[list[object]]:
    rows: list[list[object]] = []
    conditions: list[tuple[str, float, float | None]] = [
        ("speech", -10.0, None), ("speech", -10.0, -10.0), ("speech", -10.0, -6.0), ("speech", -10.0, -20.0),
        ("speech", 0.0, -10.0), ("tone", -10.0, -10.0), ("tone", -10.0, -6.0),
    ]
    for agent, caller_db, level in conditions:
        for onsets, when in ((FIRST, "first second"), (LATER, "later")):
            cells: list[object] = []
            for s in sides().values():
                runs, missed, reaction = _talk(agent, caller_db, level, onsets, s)
                cells += [missed, reaction]
            echo = "no echo" if level is None else f"echo {level:.0f} dB"
            rows.append([f"{agent}, caller {caller_db:+.0f} dB, {echo}, onset {when}", runs, *cells])
    return rows


def _pauses(r: Result) -> int:
    return len(r.clears)


def echo_rows() -> list[list[object]]:
    rows: list[list[object]] = []
    for agent in ("speech", "tone"):
        for level in (-10.0, -20.0, -30.0):
            cells: list[object] = []
            for s in sides().values():
                outs = [run(_as(echo_only(level, delay), agent), s) for delay in (40.0, 120.0, 250.0)]
                cells += [sum(o.interrupted_at is not None for o in outs), sum(map(_pauses, outs))]
            rows.append([f"{agent}, echo {level:.0f} dB, 40/120/250 ms", 3, *cells])
    return rows


def stt_rows() -> list[list[object]]:
    """The recorder's input (what utterances are cut from), canceller off against auto: the echo
    alone before the caller's onset (from 1.2 s, the probe done), and the caller's words."""
    rows: list[list[object]] = []
    off, auto = sides().values()
    for level in (-10.0, -6.0):
        for delay in (40.0, 120.0, 250.0):
            echo, words = [], []
            for name in BARGERS:
                end = len(load_wav(name)) / 2 / RATE
                for onset in LATER:
                    scenario = talk_over(name, onset, level, delay, -10.0)
                    raw, cleaned = recorded(scenario, off), recorded(scenario, auto)
                    since = max(1.2, onset - 2.0)
                    echo.append(level_db(raw, since, onset) - level_db(cleaned, since, onset))
                    words.append(level_db(raw, onset, onset + end) - level_db(cleaned, onset, onset + end))
            rows.append([f"echo {level:.0f} dB, {delay:.0f} ms", len(echo),
                         f"{min(echo):.1f} / {float(np.median(echo)):.1f}",
                         f"{float(np.median(words)):.1f} / {max(words):.1f}"])
    return rows


def _table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(head)
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def tables() -> list[str]:
    out = ["### A caller talking over the agent, canceller off vs auto", "",
           "Missed: no barge-in within 2 s of the onset. Reaction: onset to the `clear`, median / worst, ms.", ""]
    out += _table(["condition", "runs", "missed off", "reaction off", "missed auto", "reaction auto"], talk_rows())
    out += ["", "### The agent's echo alone (14 s)", ""]
    out += _table(["agent's signal, echo", "runs", "false barge-ins off", "pauses off", "false barge-ins auto",
                   "pauses auto"], echo_rows())
    out += ["", "### What the speech-to-text gets", "",
            "A caller 10 dB under the agent interrupts later in the reply. The audio the recorder is given (the "
            "utterance, pre-roll included, is cut from it), canceller off minus auto, in dB: over the echo alone "
            "before the onset (up to 2 s of it), and over the caller's words.", ""]
    out += _table(["echo", "runs", "echo removed dB, least / median", "caller's words lost dB, median / most"],
                  stt_rows())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.aec_call", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write (default: %(default)s)")
    a = p.parse_args(argv)
    if load_engine(8000) is None:
        print("pywebrtc-audio is not installed: pip install 'bridge[aec]'")
        return 1
    text = "\n".join(tables()) + "\n"
    print(text, end="")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
