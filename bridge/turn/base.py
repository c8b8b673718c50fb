"""End of turn: asked at a *candidate* end (the caller has gone quiet for ~250 ms), a judge says
how likely it is that the caller has finished, and how much longer to wait before answering.

A fixed silence timeout must choose between answering slowly (a long timeout) and cutting callers
off mid-sentence (a short one). A judge lets the core answer after a short silence when the turn
sounds finished, and wait longer when it does not ("I'd like to book an appointment for..."):

    verdict = judge.judge(pcm, rate, transcript)     # blocking; the shell runs it in a thread
    # verdict.complete_prob in [0, 1]; verdict.wait_ms: more silence to wait, counted from the
    # candidate end, before taking the turn. Speech in the meantime cancels the candidate.

Judges are asked only at candidate ends, never per frame: the model costs tens of ms per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["TurnJudge", "TurnVerdict", "WaitPolicy"]


@dataclass(frozen=True, slots=True)
class TurnVerdict:
    """One judgement. ``complete``: the judge's call at its threshold; ``judge`` names who made it."""

    complete_prob: float
    wait_ms: int
    complete: bool
    judge: str


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How a probability becomes a wait: answer now, or give the caller ``long_ms`` more to go on.

    ``long_ms`` defaults to 1250 ms: with a candidate at 250 ms of silence the turn is taken after
    1.5 s of silence at the latest, which still answers a caller who trailed off and stopped.
    """

    threshold: float = 0.5
    short_ms: int = 0
    long_ms: int = 1250

    def verdict(self, prob: float, judge: str) -> TurnVerdict:
        prob = min(1.0, max(0.0, prob))
        complete = prob >= self.threshold
        return TurnVerdict(prob, self.short_ms if complete else self.long_ms, complete, judge)


class TurnJudge(Protocol):
    """``pcm``: the caller's turn so far (PCM16 mono at ``rate``, 8 or 16 kHz, ending at the
    candidate end, trailing silence included); ``transcript``: its words when an STT gives them."""

    name: str
    audio_most: float  # the highest ``complete_prob`` it gives without a transcript

    def judge(self, pcm: bytes, rate: int, transcript: str | None = None) -> TurnVerdict: ...
