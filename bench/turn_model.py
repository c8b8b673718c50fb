"""End-of-turn judges on labelled phone-band speech: how often each is right, and what it costs.

    python -m bench.turn_model make-clips     # (re)synthesise tests/audio/turns/ with espeak-ng
    python -m bench.turn_model [--per-minute 6] [--repeat 5] [--out bench/results/turn_model.md]
    python -m bench.turn_model cost [--repeat 20]   # the heuristic's CPU per judgement, least of runs

The clips (tests/audio/turns/, described in its README) are complete sentences and questions,
unfinished ones ("I would like to book an appointment for"), and sentences with a 450 ms pause in
the middle. Candidate ends are found as a shell would: 250 ms of silence after speech (20 ms
frames, speech = within 35 dB of the clip's loudest frame). Each candidate is labelled: the pause
inside a sentence and the end of an unfinished clip are *not* ends of turn (the caller goes on
after a thinking pause, modelled as 1 s); the end of a complete clip is one.

Judges, each given the audio up to the candidate (8 kHz) and the words spoken so far, lower-case
and without punctuation (an STT that does not punctuate; punctuation would give the text rules
an easier job):

* ``smart-turn-v3.2``: the ONNX model (`bridge.turn.smart_turn`); audio only;
* ``smart-turn-v3.2+text``: the model, overruled by the text rules where the words are decisive;
* ``heuristic``: text rules plus end-of-turn prosody (`bridge.turn.heuristic`);
* ``heuristic-audio``: the prosody alone (no STT);
* ``silence-600ms``: no judge, the turn ends after 600 ms of silence.

A judge that says "complete" answers at the candidate (250 ms + its own compute); "unfinished"
waits 1250 ms more (`WaitPolicy`), so a complete turn judged unfinished is answered at 1.5 s.
A false end is an unfinished candidate judged complete: the agent talks over the caller.
CPU ms is the median of ``--repeat`` runs of ``time.process_time`` around one judgement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soxr

from bridge.turn.base import TurnJudge, WaitPolicy
from bridge.turn.heuristic import HeuristicJudge

__all__ = ["Candidate", "Clip", "candidates", "load_clips", "main", "make_clips"]

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "tests" / "audio" / "turns"
RATE = 8000
FRAME = RATE // 50  # 20 ms
CANDIDATE_MS = 250
LEAD_S, PAUSE_S, TAIL_S = 0.25, 0.45, 1.0


@dataclass(frozen=True)
class Clip:
    file: str
    voice: str
    label: str  # "complete" or "unfinished": what the last candidate is
    parts: tuple[str, ...]  # text spoken between pauses

    @property
    def pcm(self) -> bytes:
        with wave.open(str(CLIPS / self.file), "rb") as w:
            return w.readframes(w.getnframes())


@dataclass(frozen=True)
class Candidate:
    clip: Clip
    at_s: float  # the candidate end: speech end + 250 ms
    complete: bool  # the truth
    words: str  # what was said so far, lower-case, no punctuation
    silence_after_s: float  # how long the silence goes on (the clip's pause or tail)
    pcm: bytes  # the clip up to the candidate


def load_clips() -> list[Clip]:
    rows = json.loads((CLIPS / "clips.json").read_text(encoding="utf-8"))
    return [Clip(r["file"], r["voice"], r["label"], tuple(r["parts"])) for r in rows]


def _speech_frames(pcm: bytes) -> np.ndarray:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = x[: x.size // FRAME * FRAME].reshape(-1, FRAME)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-9)
    return np.asarray(level > level.max() - 35.0)


def candidates(clip: Clip) -> list[Candidate]:
    """Every point 250 ms into a silence that follows speech, labelled from the clip's parts."""
    pcm, speech = clip.pcm, _speech_frames(clip.pcm)
    ends, run, need = [], 0, CANDIDATE_MS // 20
    for i, voiced in enumerate(speech):
        run = 0 if voiced else run + 1
        if run == need and i >= need and speech[: i - need + 1].any():
            ends.append(i - need + 1)  # first silent frame
    if len(ends) != len(clip.parts):
        raise ValueError(f"{clip.file}: {len(ends)} candidate ends, expected {len(clip.parts)}")
    out = []
    for n, end in enumerate(ends):
        following = speech[end:]
        silent = int(np.argmax(following)) if following.any() else following.size
        at = (end + need) * FRAME
        words = " ".join(clip.parts[: n + 1]).lower()
        out.append(Candidate(clip, at / RATE, n == len(ends) - 1 and clip.label == "complete",
                             "".join(c for c in words if c.isalnum() or c in " '"), silent * 0.02, pcm[: at * 2]))
    return out


@dataclass(frozen=True)
class Score:
    name: str
    accuracy: float
    false_ends: int
    unfinished: int
    slow: int
    complete: int
    median_latency_ms: float
    cpu_ms: float


def score(name: str, decide: Callable[[Candidate], bool], cands: list[Candidate], cpu_ms: float,
          fixed_ms: float | None = None) -> Score:
    policy = WaitPolicy()
    verdicts = [(c, decide(c)) for c in cands]
    right = sum(v == c.complete for c, v in verdicts)
    latencies = [fixed_ms if fixed_ms is not None else
                 CANDIDATE_MS + cpu_ms + (policy.short_ms if v else policy.long_ms)
                 for c, v in verdicts if c.complete]
    return Score(name, right / len(cands), sum(v and not c.complete for c, v in verdicts),
                 sum(not c.complete for c in cands), sum(c.complete and not v for c, v in verdicts),
                 sum(c.complete for c in cands), statistics.median(latencies), cpu_ms)


def cpu_ms(judge: TurnJudge, cands: list[Candidate], repeat: int) -> float:
    """Median CPU ms of one judgement, over every candidate, ``repeat`` times each."""
    times = []
    for c in cands * repeat:
        start = time.process_time()
        judge.judge(c.pcm, RATE, c.words)
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def _padded(*names: str) -> bytes:
    """Caller clips of tests/audio, one after the other, with 300 ms of silence before and 200 ms
    after, as a turn reaches the judge at a candidate end."""
    pcm = b""
    for name in names:
        with wave.open(str(REPO / "tests" / "audio" / name), "rb") as w:
            pcm += w.readframes(w.getnframes())
    return bytes(RATE * 3 // 10 * 2) + pcm + bytes(RATE // 5 * 2)


def _least_ms(work: Callable[[], object], repeat: int) -> float:
    """Least CPU ms of ``repeat`` runs of ``work``: the cost without the shared machine's noise."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best * 1000


def _afresh(pcm: bytes) -> None:
    HeuristicJudge(use_text=False).judge(pcm, RATE)


def cost(repeat: int) -> str:
    """The heuristic judge's CPU on audio alone (no words), least of ``repeat`` runs: each of
    caller_02/03/07 judged whole by a judge that has not heard it grow (most judgements), the same
    for a 10 s turn (caller_05, 06 and 08 in a row), and 11 candidates 100 ms apart over one
    growing utterance (caller_02) judged by one judge."""
    lines = [f"| judgement | CPU ms, least of {repeat} runs |", "|---|---:|"]
    for names in (("caller_02.wav",), ("caller_03.wav",), ("caller_07.wav",),
                  ("caller_05.wav", "caller_06.wav", "caller_08.wav")):
        pcm = _padded(*names)
        ms = _least_ms(partial(_afresh, pcm), repeat)
        lines.append(f"| {' + '.join(names)}, {len(pcm) / 2 / RATE:.2f} s, afresh | {ms:.2f} |")
    pcm = _padded("caller_02.wav")
    ends = [len(pcm) - k * RATE // 10 * 2 for k in range(10, -1, -1)]

    def growing() -> None:
        judge = HeuristicJudge(use_text=False)
        for end in ends:
            judge.judge(pcm[:end], RATE)

    lines.append(f"| caller_02.wav, 11 candidates 100 ms apart up to {len(pcm) / 2 / RATE:.2f} s, "
                 f"one judge (all 11) | {_least_ms(growing, repeat):.2f} |")
    return "\n".join(lines) + "\n"


def judges() -> list[TurnJudge]:
    found: list[TurnJudge] = [HeuristicJudge(), HeuristicJudge(use_text=False)]
    try:
        from bridge.turn.smart_turn import SmartTurnJudge
        model = SmartTurnJudge()
    except Exception as exc:  # the model is optional: say why it is missing, measure the rest
        print(f"(no model: {exc})")
        return found
    return [model, HeuristicJudge(audio=model), *found]


def make_clips() -> None:
    """Synthesise every clip of clips.json: espeak-ng at 175 wpm, 8 kHz, −3 dBFS peak, silences added."""
    from bridge.tts.espeak import load

    engine = load()
    for clip in load_clips():
        pieces = [_trimmed(engine.synthesize(text, voice=clip.voice, rate_wpm=175), engine.sample_rate)
                  for text in clip.parts]
        gap = np.zeros(int(PAUSE_S * RATE), dtype=np.float64)
        speech = np.concatenate([p if i == 0 else np.concatenate([gap, p]) for i, p in enumerate(pieces)])
        speech *= 10 ** (-3 / 20) / np.abs(speech).max()
        out = np.concatenate([np.zeros(int(LEAD_S * RATE)), speech, np.zeros(int(TAIL_S * RATE))])
        with wave.open(str(CLIPS / clip.file), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(np.round(out * 32767).astype("<i2").tobytes())
        print(f"{clip.file}: {out.size / RATE:.2f} s")


def _trimmed(pcm: bytes, rate: int) -> np.ndarray:
    """8 kHz float samples with the synthesiser's leading and trailing silence cut (−40 dB from peak)."""
    x = soxr.resample(np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0, rate, RATE, quality="HQ")
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 0.01)
    return np.asarray(x[loud[0] : loud[-1] + 1])


def run(per_minute: float, repeat: int) -> str:
    cands = [c for clip in load_clips() for c in candidates(clip)]
    scores, detail = [], {}
    for judge in judges():
        verdicts = {id(c): judge.judge(c.pcm, RATE, c.words) for c in cands}
        detail[judge.name] = verdicts
        scores.append(score(judge.name, lambda c, v=verdicts: v[id(c)].complete, cands, cpu_ms(judge, cands, repeat)))
    scores.append(score("silence-600ms", lambda c: c.silence_after_s >= 0.6, cands, 0.0, fixed_ms=600.0))
    lines = [f"{len(cands)} candidate ends ({sum(c.complete for c in cands)} complete) in {len(load_clips())} clips; "
             f"cost at {per_minute:g} candidates per call-minute.", "",
             "| judge | accuracy | false ends | slow answers | median answer after speech ends | "
             "CPU ms / judgement | CPU s / call-minute |", "|---|---:|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.name} | {s.accuracy:.0%} | {s.false_ends}/{s.unfinished} | {s.slow}/{s.complete} | "
                     f"{s.median_latency_ms:.0f} ms | {s.cpu_ms:.1f} | {s.cpu_ms * per_minute / 1000:.3f} |")
    lines += ["", "| clip | candidate | truth | " + " | ".join(detail) + " |", "|---|---:|---|" + "---:|" * len(detail)]
    for c in cands:
        probs = " | ".join(f"{detail[name][id(c)].complete_prob:.2f}" for name in detail)
        lines.append(f"| {c.clip.file} \"{c.words}\" | {c.at_s:.2f} s | "
                     f"{'complete' if c.complete else 'unfinished'} | {probs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="run", choices=["run", "make-clips", "cost"])
    parser.add_argument("--per-minute", type=float, default=6.0, help="candidate ends per call-minute")
    parser.add_argument("--repeat", type=int, default=None, help="timing runs per candidate (5; cost: 20)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "turn_model.md")
    args = parser.parse_args(argv)
    if args.command == "make-clips":
        make_clips()
        return
    if args.command == "cost":
        print(cost(args.repeat or 20))
        return
    text = run(args.per_minute, args.repeat or 5)
    print(text)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
