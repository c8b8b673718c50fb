"""The call's own decisions about itself: end it, hand the caller over, prompt a silent caller.

A media stream cannot hang up or transfer a call; closing it can, with the carrier's after-stream
request answering ``<Hangup/>`` or ``<Dial>`` (``bridge.server.call_control``). So an *ending* is an
`EndCall` carrying its outcome, and this module decides when it is sent:

* the agent's `HangUp` or `Transfer` (`AgentControl`) rides on the reply it came with: once that
  reply has played out (by the clock model, ``bridge.core.playout``), the bridge waits for the
  carrier's last mark to prove it was heard, at most ``mark_grace_s``, then ends the call. A caller
  who barges in on the goodbye *cancels* the ending: they had something more to say, and the agent
  answers it (and may hang up again);
* lines the bridge says itself, not the agent (the idle goodbye, the voicemail message, the drain
  goodbye) are voiced like any reply, in a fresh context, with their ending attached. The voicemail
  message and the drain goodbye are *firm*: caller audio does not pause them (a machine's beep or
  a person talking over cannot keep a draining server up), while the idle goodbye is not: a caller
  who speaks again was not gone after all;
* idle handling: once the agent's audio has played and the caller is silent, after
  ``idle_reprompt_s`` the agent gets an idle turn (`StartTurn` with ``idle``), once per silence;
  after ``idle_hangup_s`` from the end of the agent's last audio (a reprompt is agent audio too)
  the bridge says its goodbye and hangs up. Caller speech or a key stops both clocks;
* the drain (`WindDown`): the agent's text stops where it is and its reply is cut at the end of the
  word being played (by the TTS's alignment, else the speaking rate: `word_end`), never mid-word;
  the drain goodbye follows at once. It too stops at a word end, the carrier's lead and `WORD_S`
  before ``end_by``, so the call is over by ``end_by`` without a word cut in half (``end_by``
  itself ends it regardless).

`Control` holds the state (no flags beside it elsewhere); `CallControlMixin` is the part of
``bridge.core.call.Call`` that acts on it, kept here so the turn-taking code stays apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.core.actions import Action, EndCall
from bridge.core.deadlines import is_due, soonest
from bridge.core.events import AgentControl, VoicemailDetected, WindDown
from bridge.core.playout import CHARS_PER_SECOND, Track
from bridge.core.reply import Input, Reply

if TYPE_CHECKING:
    from bridge.core.playout import Playout
    from bridge.core.terms import CallSettings

__all__ = ["SHUTDOWN", "CallControlMixin", "Control", "Ending", "word_end"]

VOICEMAIL = "voicemail"

WORD_S = 0.2
"""How long before a hard end, besides the carrier's lead (``playback.lead_ms``: that much is at the
carrier already and plays whatever we do), the line being said stops at its next word end: one
word fits in it, so the call can end on a whole word."""


SHUTDOWN = "server shutting down"
"""The reason of the `EndCall` a drain ends a call with (call records tell it from the agent's)."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How the bridge will end the call: ``kind`` "hangup" or "transfer" (to ``to``)."""

    kind: str
    to: str = ""
    reason: str = ""
    firm: bool = False  # caller audio neither pauses the line carrying it nor cancels it


def word_end(track: Track, text: str) -> int:
    """The frame of ``track`` where the word playing after its frames already sent ends (those are
    at the carrier: they play whatever we do). All the audio received when no word end is in it."""
    start, received = track.frames_sent, track.frames_sent + len(track.queue)
    if track.chars:
        ends = (position for position, char in track.chars if position >= start and char.isspace())
        return min(received, math.floor(next(ends, received)) + 1)  # the space's frame: the word is whole
    chars_per_frame = CHARS_PER_SECOND * track.fmt.frame_s
    space = text.find(" ", int(start * chars_per_frame))
    return received if space < 0 else min(received, max(start, math.ceil(space / chars_per_frame)))


class Control:
    """What the call means to do about itself, and the clocks that may make it."""

    def __init__(self, reprompt_s: float, hangup_s: float, mark_grace_s: float) -> None:
        self.reprompt_s, self.hangup_s, self.mark_grace_s = reprompt_s, hangup_s, mark_grace_s
        self.ending: Ending | None = None  # rides on reply ``turn``
        self.turn: int | None = None
        self.line: tuple[str, Ending] | None = None  # a line of the bridge's own, waiting for its turn
        self.track: Track | None = None  # the ending's reply, played out by the clock: its last mark
        self.played_at: float | None = None
        self.end_by: float | None = None  # the drain's hard end
        self.wrap_at: float | None = None  # when the line being said stops at its next word end
        self.quiet_since: float | None = None  # the agent's audio ended and the caller is silent
        self.reprompted = False
        self.voicemail = False  # the voicemail message was said (or is being said)

    def attach(self, turn: int, ending: Ending) -> None:
        if self.ending is None or not self.ending.firm:
            self.ending, self.turn = ending, turn

    @property
    def last_words(self) -> bool:
        """The bridge is saying its firm last words: no new turn starts."""
        return self.ending is not None and self.ending.firm

    def firm(self, turn: int) -> bool:
        return self.turn == turn and self.ending is not None and self.ending.firm

    def cut(self, turn: int) -> None:
        """The reply was cut (barge-in, key): a soft ending it carried is called off."""
        if self.turn == turn and self.ending is not None and not self.ending.firm:
            self.ending, self.turn = None, None

    def played(self, turn: int, track: Track, at: float) -> None:
        if self.turn == turn and self.ending is not None:
            self.track, self.played_at = track, at
        elif self.ending is None:
            self.quiet_since = at

    def caller_active(self) -> None:
        self.quiet_since, self.reprompted = None, False

    def heard_to_end(self, at: float) -> bool:
        """The ending's reply played and its last mark came back (or is overdue)."""
        track = self.track
        if track is None or self.played_at is None:
            return False
        return track.frames_played >= track.frames_sent or is_due(at, self.played_at + self.mark_grace_s)

    def idle_deadline(self) -> float | None:
        since = self.quiet_since
        if since is None or self.ending is not None or self.line is not None:
            return None
        times = [since + s for s in (self.hangup_s,) if s > 0]
        if self.reprompt_s > 0 and not self.reprompted and (self.hangup_s <= 0 or self.reprompt_s < self.hangup_s):
            times.append(since + self.reprompt_s)
        return min(times, default=None)

    def ending_deadline(self) -> float | None:
        if self.played_at is None and self.wrap_at is None and self.end_by is None:
            return None  # the common case, asked after every event
        mark = self.played_at + self.mark_grace_s if self.played_at is not None else None
        return soonest((mark, self.wrap_at, self.end_by))


class CallControlMixin:
    """The hooks of `Call` that act on its `Control` (see the module docstring)."""

    if TYPE_CHECKING:
        settings: CallSettings
        _control: Control
        _reply: Reply | None
        _turn: int
        _playout: Playout

        def _agent_finished(self, reply: Reply, at: float, out: list[Action], apology: str = "") -> None: ...
        def _start_turn(self, utterance: bytes, at: float, out: list[Action], *, idle: bool = False) -> None: ...
        def _on_ended(self, at: float, out: list[Action]) -> None: ...
        def _cut(self, reply: Reply, at: float, out: list[Action], frames: int | None = None) -> None: ...
        def _advance(self, reply: Reply, happening: Input, at: float, out: list[Action]) -> None: ...

    def _new_reply(self, at: float) -> Reply:
        self._turn += 1
        self._reply = Reply(self._turn, at, self.settings.audio)
        return self._reply

    def _cut_now(self, reply: Reply, at: float, out: list[Action]) -> None:
        """Stop the reply at once, wherever it is (the turn-end key's way: no barge-in counted).
        It is a clear like a pause's: the echo guard forgets too."""
        frames = self._playout.heard_frames(reply.track, at)
        self._playout.clear(reply.track, at, out)
        self._cut(reply, at, out, frames)

    def _greet(self, parameters: dict[str, str], at: float, out: list[Action]) -> None:
        """The first words: the voicemail message for a machine, else the agent's greeting."""
        if parameters.get("mode") == VOICEMAIL and self.settings.voicemail_message.strip():
            self._leave_voicemail(at, out)
        else:
            self._start_turn(b"", at, out)

    def _leave_voicemail(self, at: float, out: list[Action]) -> None:
        control = self._control
        if control.voicemail:
            return
        control.voicemail = True
        reply = self._reply
        if reply is not None:
            control.cut(reply.turn)
            self._cut_now(reply, at, out)
        control.line = (self.settings.voicemail_message.strip(), Ending("hangup", reason="voicemail left", firm=True))

    def _on_control(self, event: AgentControl | VoicemailDetected | WindDown, out: list[Action]) -> None:
        control, reply, at = self._control, self._reply, event.at
        match event:
            case AgentControl():
                if reply is not None and reply.turn == event.turn and reply.writing:
                    reason = event.reason or f"the agent asked to {'transfer to ' + event.to if event.to else 'end'}"
                    control.attach(reply.turn, Ending(event.kind, event.to, reason))
            case VoicemailDetected():
                if self.settings.voicemail_message.strip():
                    self._leave_voicemail(at, out)
            case WindDown():
                control.end_by = event.end_by if control.end_by is None else min(control.end_by, event.end_by)
                control.wrap_at = control.end_by - self.settings.lead_ms / 1000 - WORD_S
                if control.ending is not None and control.ending.firm:
                    return  # already saying its last words
                if reply is not None:
                    control.cut(reply.turn)
                    self._stop_at_word_end(reply, at, out)
                control.line = (event.text.strip() or "Goodbye.", Ending("hangup", reason=SHUTDOWN,
                                                                      firm=True))

    def _stop_at_word_end(self, reply: Reply, at: float, out: list[Action]) -> None:
        """No more of the agent (its turn is cancelled, its context closed): the reply plays on to
        the end of the word in the caller's ear, and only that much counts as heard."""
        track = reply.track
        if not reply.ending:
            track.end_of_stream()
            self._advance(reply, Input.FAILED, at, out)  # salvaging: what is here plays, no more comes
        keep = max(0, word_end(track, reply.text_sent) - track.frames_sent)
        while len(track.queue) > keep:
            track.queue.pop()

    def _control_step(self, at: float, out: list[Action]) -> None:
        """After every event, with no reply live: say a waiting line, or end a call whose goodbye was heard."""
        control = self._control
        if control.heard_to_end(at):
            self._end_now(at, out)
        elif control.line is not None and self._reply is None:
            text, ending = control.line
            control.line = None
            reply = self._new_reply(at)
            control.attach(reply.turn, ending)
            reply.add_text(text, at)
            self._agent_finished(reply, at, out)

    def _control_tick(self, at: float, out: list[Action], idle: bool) -> None:
        """``Timer.IDLE`` (``idle``) or ``Timer.ENDING`` ran out."""
        control, reply = self._control, self._reply
        if not idle:
            if control.wrap_at is not None and is_due(at, control.wrap_at):
                control.wrap_at = None
                if reply is not None:
                    self._stop_at_word_end(reply, at, out)
            if control.heard_to_end(at) or (control.end_by is not None and is_due(at, control.end_by)):
                self._end_now(at, out)
            return
        since = control.quiet_since
        if since is None or reply is not None:
            return
        if control.hangup_s > 0 and is_due(at, since + control.hangup_s):
            goodbye = self.settings.goodbye.strip() or "Goodbye!"
            control.line = (goodbye, Ending("hangup", reason="the caller was silent"))
            control.quiet_since = None
        elif not control.reprompted:
            control.reprompted = True
            control.quiet_since = None
            self._start_turn(b"", at, out, idle=True)

    def _end_now(self, at: float, out: list[Action]) -> None:
        ending = self._control.ending or Ending("hangup", reason=SHUTDOWN)
        reply = self._reply
        if reply is not None:
            self._control.cut(reply.turn)
        self._on_ended(at, out)
        out.append(EndCall(ending.reason or ending.kind, ending.kind, ending.to))
