"""Reply latency, sequential against preemptive: the core in simulated time, stages scripted.

    python -m bench.pipeline [--out bench/results/pipeline.md]

Every clip of tests/audio/turns (complete sentences, unfinished ones, and sentences with a pause
in the middle) is played to `bridge.core.call.Call` after the greeting, with the shell's stages
replaced by fixed delays: transcription (STT) and the LLM's first token after each `StartTurn`,
the TTS's first audio after each context opens. Each delay profile runs twice:

* **sequential**: no candidate ends (``[turn] candidate_ms = 0``): the turn ends after the VAD's
  ``end_ms`` of silence, and only then do transcription, LLM and TTS run, one after the other;
* **preemptive**: the defaults: at 150 ms of silence the judge is asked and the agent starts on
  the words so far, its reply held until the end of turn is confirmed;
* **preemptive, live STT**: the same with a streaming transcriber (``BRIDGE_STT=deepgram``): the
  words are transcribed while the caller talks, so transcription adds nothing after the pause.

Printed per profile: reply latency p50/p95 (the end of the caller's speech to the first reply
frame sent to the carrier), false ends of turn (a reply heard before the caller finished a
sentence with a pause in it), and wasted LLM calls per turn (tentative turns abandoned because
the caller went on). The judge is the heuristic, on audio only (as with a scripted agent), so the
VAD's ``end_ms`` stays the floor: what preemption buys here is the stages' time, not a shorter
silence. Takes a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import statistics
from pathlib import Path

from bridge.core.actions import AbandonTurn, CancelTurn, CloseContext, JudgeTurn, OpenContext, SendMedia, StartTurn
from bridge.core.call import Call, CallSettings
from bridge.core.events import (
    AgentDone,
    AgentText,
    CallerAudio,
    CallStarted,
    Event,
    Tick,
    TtsAudio,
    TtsConnected,
    TtsFinal,
    TurnVerdict,
)
from bridge.core.noise import level_dbfs
from bridge.core.turns import TurnConfig
from bridge.turn import HeuristicJudge
from tests.support import FRAME_S, frames, load_wav, silence

__all__ = ["PROFILES", "Outcome", "main", "run_clip"]

TURNS = Path(__file__).resolve().parent.parent / "tests" / "audio" / "turns"
PROFILES = {"fast": (0.1, 0.2, 0.1), "typical": (0.2, 0.3, 0.15), "slow": (0.4, 0.6, 0.3)}  # STT, LLM, TTS (s)
SPEECH_AT = 3.0  # the caller starts once the greeting has played
JUDGE = HeuristicJudge(use_text=False)


@dataclasses.dataclass
class Outcome:
    latency: float | None  # speech end to the first reply frame sent
    false_end: bool  # a reply frame went out before the caller had finished
    wasted: int  # tentative turns abandoned


def run_clip(pcm: bytes, settings: CallSettings, stt: float, llm: float, tts: float) -> Outcome:
    """One caller turn through the core, every stage a fixed delay."""
    call, queue, seq = Call(settings), [], itertools.count()
    speech_end = SPEECH_AT + _speech_end(pcm)
    line = silence(SPEECH_AT) + pcm + silence(3.0)

    def push(event: Event) -> None:
        heapq.heappush(queue, (event.at, next(seq), event))

    for i, frame in enumerate(frames(line)):
        push(CallerAudio(round((i + 1) * FRAME_S, 6), frame))
    push(CallStarted(0.0, "MZ", "CA"))
    push(TtsConnected(0.0))
    first_media, false_end, wasted, cancelled = None, False, 0, set()
    while queue:
        deadline = call.next_deadline()
        if deadline is not None and deadline < queue[0][0]:
            event: Event = Tick(deadline)
        else:
            event = heapq.heappop(queue)[2]
            if isinstance(event, AgentText | AgentDone) and event.turn in cancelled:
                continue
        for action in call.handle(event):
            at = event.at
            match action:
                case StartTurn(turn=turn):
                    push(AgentText(at + stt + llm, turn, "Sure, I can help with that. "))
                    push(AgentDone(at + stt + llm + 0.001, turn))
                case CancelTurn(turn=turn):
                    cancelled.add(turn)
                case AbandonTurn():
                    wasted += 1
                case JudgeTurn(candidate=candidate, utterance=utterance):
                    v = JUDGE.judge(utterance, 8000)
                    push(TurnVerdict(at + 0.003, candidate, v.complete_prob, v.wait_ms, v.complete))
                case OpenContext(context_id=cid):
                    push(TtsAudio(at + tts, cid, silence(1.5)))
                case CloseContext(context_id=cid):
                    push(TtsFinal(at + 0.05, cid))
                case SendMedia() if at > SPEECH_AT + 0.1 and first_media is None:
                    false_end = false_end or at < speech_end
                    first_media = at if at >= speech_end else None
                case _:
                    pass
        if first_media is not None and event.at > first_media + 0.1:
            break
    return Outcome(None if first_media is None else first_media - speech_end, false_end, wasted)


def _speech_end(pcm: bytes) -> float:
    """Where the caller stops: the end of the last 20 ms frame above -40 dBFS (as `bridge call` measures)."""
    loud = [i for i, frame in enumerate(frames(pcm)) if level_dbfs(frame) > -40.0]
    return (loud[-1] + 1) * FRAME_S if loud else 0.0


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args(argv)
    clips = [c["file"] for c in json.loads((TURNS / "clips.json").read_text(encoding="utf-8"))]
    pipelines = {"sequential": (CallSettings(turn=TurnConfig(candidate_ms=0)), 1.0),
                 "preemptive": (CallSettings(), 1.0),
                 "preemptive, live STT": (CallSettings(), 0.0)}  # the words are ready at the turn's end
    lines = [f"{len(clips)} caller turns (tests/audio/turns), stages as fixed delays; reply latency from the "
             "end of the caller's speech to the first reply frame sent.", "",
             "| profile (STT/LLM/TTS ms) | pipeline | reply p50 | reply p95 | false ends of turn | "
             "wasted LLM calls / turn |", "|---|---|---:|---:|---:|---:|"]
    for name, (stt, llm, tts) in PROFILES.items():
        for pipeline, (settings, stt_share) in pipelines.items():
            outcomes = [run_clip(load_wav(f"turns/{clip}"), settings, stt * stt_share, llm, tts) for clip in clips]
            lat = [o.latency * 1000 for o in outcomes if o.latency is not None]
            false_ends = sum(o.false_end for o in outcomes)
            wasted = sum(o.wasted for o in outcomes) / len(outcomes)
            lines.append(f"| {name} ({stt * 1000:.0f}/{llm * 1000:.0f}/{tts * 1000:.0f}) | {pipeline} | "
                         f"{_pct(lat, 50):.0f} ms | {_pct(lat, 95):.0f} ms | {false_ends}/{len(outcomes)} | "
                         f"{wasted:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
