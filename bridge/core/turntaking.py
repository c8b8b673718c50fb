"""The call's turn-taking moves: starting turns, and ending them at a judged pause.

`TurnTaking` is a part of `bridge.core.call.Call` kept in its own module: the rules of *when* a
turn ends live in ``bridge.core.turns`` (candidates, verdicts, the silence they buy); here they
meet the reply lifecycle (``bridge.core.reply``): a tentative turn's reply starts *held*, the end
of turn confirmed *releases* it, the caller going on *abandons* it. An abandoned reply closes
unheard (`AbandonTurn` tells the agent to forget the turn), so nothing of a guess ever plays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.core.actions import AbandonTurn, Action, ConfirmTurn, JudgeTurn, StartTurn
from bridge.core.control import Control
from bridge.core.events import DtmfReceived, TurnVerdict
from bridge.core.reply import Input, Reply
from bridge.core.terms import CallSettings, CallState
from bridge.core.turns import Candidate, EndOfTurn
from bridge.core.utterance import Recorder
from bridge.core.vad import SpeechPaused

__all__ = ["TurnTaking"]


class TurnTaking:
    """Turn starts and ends; `Call` provides the state and the reply's moves (``_advance``)."""

    settings: CallSettings
    _eot: EndOfTurn
    _recorder: Recorder
    _reply: Reply | None
    _turn: int
    _digits: str
    _control: Control

    _state: CallState
    _malformed: int

    def _advance(self, reply: Reply, happening: Input, at: float, out: list[Action]) -> None:
        raise NotImplementedError  # `Call` moves replies

    if TYPE_CHECKING:  # provided by `bridge.core.control.CallControlMixin`, beside this in `Call`

        def _cut_now(self, reply: Reply, at: float, out: list[Action]) -> None: ...

    def _on_dtmf(self, event: DtmfReceived, out: list[Action]) -> None:
        """Keys go to the agent with the next turn; the turn-end key starts that turn now."""
        if self._state is CallState.CONNECTING:
            self._malformed += 1
            return
        self._digits += event.digit
        self._control.caller_active()
        if not self.settings.turn_end_digit or event.digit != self.settings.turn_end_digit:
            return
        self._went_on(event.at, out)  # the key ends the turn now, with everything said: not a held guess
        reply = self._reply
        if reply is not None and self._control.firm(reply.turn):
            return  # the bridge's last words (voicemail, drain) are not cut by a key
        if reply is not None:
            # A key pressed over the agent stops it as speech would (an IVR habit), without
            # counting a barge-in. It is a clear like a pause's: the echo guard forgets too.
            self._cut_now(reply, event.at, out)
        utterance = self._recorder.take() or b""  # what the caller said before the key, if anything
        self._start_turn(utterance, event.at, out)

    def _init_turns(self, settings: CallSettings) -> int:
        """Set up the end of turn; returns the silence the listener reports as a candidate (0: none)."""
        self._eot = EndOfTurn(settings.turn, settings.vad.end_ms)
        return settings.turn.candidate_ms if self._eot.enabled else 0

    def _start_turn(
        self, utterance: bytes, at: float, out: list[Action], *, tentative: bool = False, idle: bool = False
    ) -> None:
        if self._control.last_words:
            return  # the bridge is saying its last words (bridge.core.control): no new turn
        self._turn += 1
        self._reply = Reply(self._turn, at, self.settings.audio, held=tentative)
        out.append(StartTurn(self._turn, utterance, self._digits, tentative, idle))
        if not tentative:  # a tentative turn's keys come again with its confirmation or the next try
            self._digits = ""

    # ----------------------------------------------------------------- end of turn (bridge.core.turns)

    def _paused(self, change: SpeechPaused, out: list[Action]) -> None:
        """A candidate end: ask the judge; if nothing is playing, start a held reply now."""
        if self._reply is not None or not self._recorder.recording:
            return  # a reply is live (the caller talks over it): its turn ends at SpeechEnded
        candidate = self._eot.open(change.offset, change.silence)
        utterance = self._recorder.peek()
        if self._eot.preemptive:
            self._start_turn(utterance, change.at, out, tentative=True)
            candidate.turn = self._turn
        out.append(JudgeTurn(candidate.id, utterance, candidate.turn, self._eot.sure_audio()))

    def _on_verdict(self, event: TurnVerdict, out: list[Action]) -> None:
        """A verdict moves the candidate's end (a late one, for a candidate that is over, is dropped)."""
        applied = self._eot.verdict(event.candidate, event.complete_prob, event.wait_ms, event.complete, event.text)
        if applied and self._eot.due(event.at):
            self._turn_over(event.at, out)

    def _silence_heard(self, candidate: Candidate | None, pcm: bytes, at: float, out: list[Action]) -> None:
        """The caller's audio ``pcm`` came after ``candidate`` opened (the candidate before it, if
        any) and did not end it: the turn is over once the silence heard is long enough."""
        if candidate is not None and self._eot.heard(candidate, len(pcm) / self.settings.audio.pcm_bytes_per_s):
            self._turn_over(at, out)

    def _went_on(self, at: float, out: list[Action]) -> None:
        """The caller went on after a candidate end: abandon its held reply, unheard."""
        candidate = self._eot.cancel()
        reply = self._reply
        if candidate is not None and reply is not None and reply.held and reply.turn == candidate.turn:
            self._advance(reply, Input.ABANDON, at, out)
            out.append(AbandonTurn(reply.turn))

    def _turn_over(self, at: float, out: list[Action]) -> None:
        """The candidate end held: release its reply (at once, its audio is likely here), or start one."""
        candidate = self._eot.cancel()
        utterance = self._recorder.take() or b""
        reply = self._reply
        if candidate is not None and reply is not None and reply.held and reply.turn == candidate.turn:
            self._advance(reply, Input.RELEASE, at, out)
            out.append(ConfirmTurn(reply.turn, round(at - candidate.offset, 6)))
            self._digits = ""
        elif reply is None:
            self._start_turn(utterance, at, out)

