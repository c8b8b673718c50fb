"""When is the caller's turn over? Candidate ends, a judge's verdict, and the silence it buys.

A fixed silence (the VAD's ``end_ms``) must choose between answering slowly and cutting callers
off mid-sentence. Instead, the VAD reports a *candidate* end after a short pause
(``candidate_ms``, `bridge.core.vad.SpeechPaused`). At each candidate the core:

* asks the shell's end-of-turn judge for a verdict (`JudgeTurn`; the answer is a `TurnVerdict`
  event naming the candidate, so a late answer for a candidate that is over is dropped);
* when ``preemptive``, starts the agent on a *tentative* turn with the utterance so far; its
  reply is voiced but held (``bridge.core.reply``), so it can play the moment the turn is over.

The turn ends at the candidate's speech offset plus a silence this module picks from the
verdict (`EndOfTurn.verdict`), never less than ``min_ms`` nor more than ``max_ms``. Until a verdict
comes, and whenever the judge is not confident, the VAD's ``end_ms`` is the floor: a
mid-sentence pause shorter than that is never taken for an end. Caller speech before the end
cancels the candidate (the tentative turn is abandoned, and the next candidate starts again from
the utterance's first onset).

A verdict made from audio alone (no transcript) only shortens the wait, and only when very sure
(``confident_audio``): on real speech its accuracy is near chance (bench/results/turn_model.md),
so it may never make the caller wait longer than the plain VAD would.

The silence is counted in the caller's *audio*, not on the clock: the turn ends when the frames
heard since the pause cover it (`EndOfTurn.heard`). Audio over the internet comes in bursts (a
lost TCP segment holds everything behind it for a retransmission, 200 ms or more), and a
wall-clock deadline would fire inside such a hole, while the words that end the pause are still
on their way: the agent would answer a caller who is talking. Only when no audio comes at all
for ``STALL_S`` past the end does the clock end the turn (`EndOfTurn.deadline`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.core.deadlines import EPS, is_due
from bridge.core.limits import within

__all__ = ["STALL_S", "Candidate", "EndOfTurn", "TurnConfig"]

STALL_S = 0.5
"""How long past a turn's end the caller's audio may be missing before the clock ends the turn
anyway: longer than one TCP retransmission (at least 200 ms on Linux) with its burst, short
enough that a carrier that sends nothing in silence still gets its answer promptly."""


@dataclass(frozen=True, slots=True)
class TurnConfig:
    candidate_ms: int = within(150, 0, 5_000)  # silence that makes a candidate end of turn (0: off)
    preemptive: bool = True  # start the agent at each candidate, its reply held until the end is sure
    min_ms: int = within(300, 0, 10_000)  # least silence that ends a turn the judge is sure of
    max_ms: int = within(1_500, 20, 60_000)  # most silence a judge may make the caller's turn wait
    confident: float = within(0.65, 0.0, 1.0)  # a verdict read from a transcript this sure may end early
    confident_audio: float = within(0.9, 0.0, 1.0)  # an audio-only verdict this sure may end early
    model: bool = False  # the Smart Turn model (the ``turn`` extra) rather than the heuristic judge
    # (max_ms below min_ms: max_ms wins; every value in range is a working call, never a start-up error)


@dataclass(slots=True)
class Candidate:
    """One candidate end: the speech stopped at ``offset``; the turn ends at ``end_at``, once the
    caller's audio since ``offset`` (``heard`` seconds of it) covers that much silence."""

    id: int
    offset: float
    end_at: float
    heard: float
    turn: int = -1  # the tentative turn started for it (-1: none)

    def covered(self) -> bool:
        """Whether the audio heard since the speech stopped covers the silence that ends the turn."""
        return self.offset + self.heard >= self.end_at - EPS


class EndOfTurn:
    """The candidate end in progress, if any, and when it becomes the end of the turn."""

    __slots__ = ("_config", "_floor", "_next_id", "candidate")

    def __init__(self, config: TurnConfig, floor_ms: int) -> None:
        self._config = config
        self._floor = floor_ms / 1000  # the VAD's end_ms: the silence that ends a turn without a verdict
        self._next_id = 0
        self.candidate: Candidate | None = None

    @property
    def enabled(self) -> bool:
        return 0 < self._config.candidate_ms < self._floor * 1000

    @property
    def preemptive(self) -> bool:
        return self._config.preemptive

    def open(self, offset: float, heard: float) -> Candidate:
        """A pause began at ``offset``, ``heard`` seconds of silent audio ago: a candidate, ending
        the turn at the floor until judged."""
        self._next_id += 1
        self.candidate = Candidate(self._next_id, offset, offset + self._floor, heard)
        return self.candidate

    def heard(self, candidate: Candidate, seconds: float) -> bool:
        """``seconds`` more of the caller's audio came, silent, for ``candidate`` (opened before
        it); True when that audio now covers the silence that ends the turn."""
        if self.candidate is not candidate:
            return False  # the caller went on (or the turn ended) in this very audio
        candidate.heard += seconds
        return candidate.covered()

    def due(self, now: float) -> bool:
        """Whether the turn is over: the silence heard, or no audio for `STALL_S` past its end."""
        candidate = self.candidate
        return candidate is not None and (candidate.covered() or is_due(now, candidate.end_at + STALL_S))

    def verdict(self, candidate: int, prob: float, wait_ms: int, complete: bool, text: bool) -> bool:
        """Apply the judge's answer for ``candidate``; False when that candidate is over (dropped)."""
        current = self.candidate
        if current is None or current.id != candidate:
            return False
        c = self._config
        sure = complete and prob >= (c.confident if text else c.confident_audio)
        if sure:
            silence = c.candidate_ms / 1000 + max(0, wait_ms) / 1000
        elif text and not complete:
            silence = max(self._floor, c.candidate_ms / 1000 + max(0, wait_ms) / 1000)
        else:
            silence = self._floor
        silence = min(max(silence, c.min_ms / 1000), c.max_ms / 1000)
        current.end_at = current.offset + silence
        return True

    def sure_audio(self) -> float:
        """The least probability at which a verdict from audio alone moves the end of the turn (0:
        any verdict does): below it `verdict` keeps the floor, which a candidate has unjudged, unless
        ``min_ms``/``max_ms`` move the floor itself. The shell skips asking a judge that cannot
        reach it (the heuristic's prosody tops out at 0.85 against the default 0.9)."""
        c = self._config
        kept = min(max(self._floor, c.min_ms / 1000), c.max_ms / 1000) == self._floor
        return c.confident_audio if kept else 0.0

    def cancel(self) -> Candidate | None:
        """The caller went on talking: the candidate is over; returns it, if there was one."""
        candidate, self.candidate = self.candidate, None
        return candidate

    def deadline(self) -> float | None:
        """When the clock ends the turn if the caller's audio stops coming (`STALL_S`); while it
        comes, `heard` ends it on the frame that completes the silence."""
        return self.candidate.end_at + STALL_S if self.candidate is not None else None
