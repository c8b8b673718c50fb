"""The reply lifecycle: one state enum and one transition table, read as data.

Rule: every state a reply can be in, and every move between them, lives here (h11's
``_state.py`` keeps the same rule for HTTP). The call (``bridge.core.call``) decides *which*
input a reply gets; this table alone decides what that input does to it. A move that is not in
the table is a bug in the core and raises `ReplyStateError`. Nothing a peer sends reaches the
table unchecked: the call drops late, stray or repeated input before it gets here, so no peer
can make the core raise.

A reply is one agent turn on its way to the caller. Its text goes into one fresh TTS context;
its audio goes through the playout (``bridge.core.playout``). Three things advance it:

* the agent: it writes, then it is done (or fails, or times out: then it is done too, with the
  apology as its last words);
* the TTS: the context's first audio, its ``isFinal``, or its failure (an error frame for it, no
  first audio in time, no ``isFinal`` in time), or the socket's loss (the unvoiced rest is voiced
  again in a fresh context);
* the caller: a sound over the reply *pauses* it (soft barge-in); the sound turning out to be
  nothing *resumes* it; speech confirmed, or the turn-end key, *cuts* it.

A paused reply goes on receiving text and audio exactly as a playing one does: pausing holds
the playout only. So each state has a paused twin, and every move of a state is also a move of
its twin, between the twins (`TRANSITIONS` is built that way from `_MOVES`).

A *held* reply is a speculative one (``bridge.core.turns``): started at a short pause in the
caller's speech, before the end of their turn is sure. It is written and voiced like any other,
but nothing of it plays: each state has a held twin too. The end of turn confirmed *releases* it
(it plays from the first frame, already here); the caller going on *abandons* it (it closes
unheard, and the agent forgets the turn). A held reply never plays out, and is never paused: it
has not been heard, so there is nothing to barge in on.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from bridge.core.actions import ReplyHeard
from bridge.core.audio import AudioFormat
from bridge.core.playout import Track
from bridge.core.text import split_ready_text

__all__ = ["HELD", "PAUSED", "TRANSITIONS", "Input", "Reply", "ReplyState", "ReplyStateError"]


class ReplyStateError(RuntimeError):
    """A move the reply table does not allow: a bug in the core, never the peer's doing."""


class ReplyState(enum.Enum):
    WRITING = "writing"  # the agent is writing; no audio of the reply's context yet
    SPEAKING = "speaking"  # the agent is writing; its context's audio is coming
    AWAITING_AUDIO = "awaiting audio"  # the agent is done; its context owes the first audio
    DRAINING = "draining"  # the agent is done, its context is closed; audio comes until isFinal
    PLAYING_OUT = "playing out"  # all of the reply is here; what is left plays out
    SALVAGING = "salvaging"  # the voice failed; what is here plays out, and only that was heard
    WRITING_PAUSED = "writing, paused"
    SPEAKING_PAUSED = "speaking, paused"
    AWAITING_AUDIO_PAUSED = "awaiting audio, paused"
    DRAINING_PAUSED = "draining, paused"
    PLAYING_OUT_PAUSED = "playing out, paused"
    SALVAGING_PAUSED = "salvaging, paused"
    WRITING_HELD = "writing, held"
    SPEAKING_HELD = "speaking, held"
    AWAITING_AUDIO_HELD = "awaiting audio, held"
    DRAINING_HELD = "draining, held"
    PLAYING_OUT_HELD = "playing out, held"
    SALVAGING_HELD = "salvaging, held"
    CLOSED = "closed"  # played out or cut: what the caller heard is reported


class Input(enum.Enum):
    """What can happen to a reply (the call turns events into these)."""

    AGENT_DONE = "agent done"  # the agent finished (or failed), and there is text to voice or being voiced
    NOTHING_TO_VOICE = "nothing to voice"  # the agent finished, and no text waits and no context is open
    FIRST_AUDIO = "first audio"  # the context's first audio arrived
    FINAL = "final"  # the context's isFinal
    FAILED = "failed"  # the context is lost to us: an error frame, no first audio or no isFinal in time
    LOST = "lost"  # the TTS socket went; unvoiced text waits for a fresh context
    LOST_VOICED = "lost, all voiced"  # the TTS socket went after all the text sent had been voiced
    PAUSE = "pause"  # a sound over the reply
    RESUME = "resume"  # the sound was nothing
    CUT = "cut"  # speech confirmed, the turn-end key, or the call's end
    PLAYED_OUT = "played out"  # no audio left and the carrier has played the last frame
    RELEASE = "release"  # a held reply's turn is confirmed: it may play
    ABANDON = "abandon"  # a held reply's turn is not over (the caller went on): it closes unheard


_MOVES: Mapping[ReplyState, Mapping[Input, ReplyState]] = {
    ReplyState.WRITING: {
        Input.AGENT_DONE: ReplyState.AWAITING_AUDIO,
        Input.NOTHING_TO_VOICE: ReplyState.PLAYING_OUT,
        Input.FIRST_AUDIO: ReplyState.SPEAKING,
        Input.FINAL: ReplyState.SALVAGING,  # the server ended a context we had not closed
        Input.FAILED: ReplyState.SALVAGING,
        Input.LOST: ReplyState.WRITING,
        Input.LOST_VOICED: ReplyState.WRITING,
    },
    ReplyState.SPEAKING: {
        Input.AGENT_DONE: ReplyState.DRAINING,  # the context is closed on the way in
        Input.FINAL: ReplyState.SALVAGING,
        Input.FAILED: ReplyState.SALVAGING,
        Input.LOST: ReplyState.WRITING,
        Input.LOST_VOICED: ReplyState.WRITING,
    },
    ReplyState.AWAITING_AUDIO: {
        Input.FIRST_AUDIO: ReplyState.DRAINING,  # the context is closed on the way in
        Input.FINAL: ReplyState.SALVAGING,
        Input.FAILED: ReplyState.SALVAGING,
        Input.LOST: ReplyState.AWAITING_AUDIO,
        Input.LOST_VOICED: ReplyState.PLAYING_OUT,
    },
    ReplyState.DRAINING: {
        Input.FINAL: ReplyState.PLAYING_OUT,
        Input.FAILED: ReplyState.SALVAGING,
        Input.LOST: ReplyState.AWAITING_AUDIO,
        Input.LOST_VOICED: ReplyState.PLAYING_OUT,
    },
    ReplyState.PLAYING_OUT: {Input.PLAYED_OUT: ReplyState.CLOSED},
    ReplyState.SALVAGING: {Input.PLAYED_OUT: ReplyState.CLOSED},
}
"""The moves of a reply that is not paused. A paused reply moves alike, between paused twins."""

PAUSED: Mapping[ReplyState, ReplyState] = MappingProxyType({
    ReplyState.WRITING: ReplyState.WRITING_PAUSED,
    ReplyState.SPEAKING: ReplyState.SPEAKING_PAUSED,
    ReplyState.AWAITING_AUDIO: ReplyState.AWAITING_AUDIO_PAUSED,
    ReplyState.DRAINING: ReplyState.DRAINING_PAUSED,
    ReplyState.PLAYING_OUT: ReplyState.PLAYING_OUT_PAUSED,
    ReplyState.SALVAGING: ReplyState.SALVAGING_PAUSED,
})


HELD: Mapping[ReplyState, ReplyState] = MappingProxyType({
    ReplyState.WRITING: ReplyState.WRITING_HELD,
    ReplyState.SPEAKING: ReplyState.SPEAKING_HELD,
    ReplyState.AWAITING_AUDIO: ReplyState.AWAITING_AUDIO_HELD,
    ReplyState.DRAINING: ReplyState.DRAINING_HELD,
    ReplyState.PLAYING_OUT: ReplyState.PLAYING_OUT_HELD,
    ReplyState.SALVAGING: ReplyState.SALVAGING_HELD,
})


def _build() -> dict[tuple[ReplyState, Input], ReplyState]:
    """`_MOVES` for all three twins, plus: pause and resume between the playing and paused twins,
    release from held; a cut from anywhere; abandon from held. A held reply never plays out."""
    table: dict[tuple[ReplyState, Input], ReplyState] = {}
    for state, moves in _MOVES.items():
        twin, held = PAUSED[state], HELD[state]
        table[state, Input.PAUSE] = twin
        table[twin, Input.RESUME] = state
        table[held, Input.RELEASE] = state
        table[state, Input.CUT] = table[twin, Input.CUT] = ReplyState.CLOSED
        table[held, Input.CUT] = table[held, Input.ABANDON] = ReplyState.CLOSED
        for happening, new in moves.items():
            table[state, happening] = new
            table[twin, happening] = PAUSED.get(new, new)
            if happening is not Input.PLAYED_OUT:
                table[held, happening] = HELD.get(new, new)
    return table


TRANSITIONS: Mapping[tuple[ReplyState, Input], ReplyState] = MappingProxyType(_build())
"""(state, input) -> new state: every legal move of a reply. Anything else is a bug."""


def _with_twins(*states: ReplyState) -> tuple[ReplyState, ...]:
    # Tuples, not sets: these are asked several times per 20 ms frame, and a tuple finds an enum
    # member by identity, where a set would hash it in Python first.
    return (*states, *(PAUSED[state] for state in states), *(HELD[state] for state in states))


_PAUSED_STATES = tuple(PAUSED.values())
_HELD_STATES = tuple(HELD.values())
_WRITING = _with_twins(ReplyState.WRITING, ReplyState.SPEAKING)
_VOICED = _with_twins(ReplyState.SPEAKING, ReplyState.DRAINING)
_AWAITING = _with_twins(ReplyState.AWAITING_AUDIO)
_DRAINING = _with_twins(ReplyState.DRAINING)
_ENDING = _with_twins(ReplyState.PLAYING_OUT, ReplyState.SALVAGING)
_SALVAGING = _with_twins(ReplyState.SALVAGING)


class Reply:
    """One agent turn on its way to the caller: its state, its text, its context, its audio."""

    __slots__ = (
        "context_id", "done_at", "last_text_at", "outbox", "paused_at", "pending", "state", "text_sent", "track",
        "turn", "unflushed",
    )

    def __init__(self, turn: int, at: float, fmt: AudioFormat, *, held: bool = False) -> None:
        """``held``: a speculative reply, voiced but not played until its turn is confirmed."""
        self.turn = turn
        self.state = ReplyState.WRITING_HELD if held else ReplyState.WRITING
        self.track = Track(turn, fmt)
        self.context_id: str | None = None
        self.pending = ""  # agent text not yet cut into TTS pieces
        self.outbox: list[tuple[str, bool]] = []  # pieces (text, flush) waiting for the context
        self.unflushed = False  # text went to the context after its last flush
        self.text_sent = ""
        self.last_text_at = at  # when the agent last proved alive (the turn's start, then each text)
        self.done_at = 0.0  # when the agent finished
        self.paused_at: float | None = None  # when the pause began, while paused

    def pause(self, at: float) -> None:
        self.move(Input.PAUSE)
        self.paused_at = at

    def resume(self) -> None:
        self.move(Input.RESUME)
        self.paused_at = None

    def move(self, happening: Input) -> ReplyState:
        """Apply one input; an input the table does not allow in this state is our bug."""
        new = TRANSITIONS.get((self.state, happening))
        if new is None:
            raise ReplyStateError(f"reply {self.turn}: {happening.value!r} is not a move from {self.state.value!r}")
        self.state = new
        return new

    # ------------------------------------------------------------------ what the state says

    @property
    def writing(self) -> bool:
        """The agent may still send text for this reply."""
        return self.state in _WRITING

    @property
    def voiced(self) -> bool:
        """The reply's current context has sent audio."""
        return self.state in _VOICED

    @property
    def awaiting_audio(self) -> bool:
        return self.state in _AWAITING

    @property
    def draining(self) -> bool:
        return self.state in _DRAINING

    @property
    def ending(self) -> bool:
        """No more audio will come: what is queued plays out, then the reply closes."""
        return self.state in _ENDING

    @property
    def salvaging(self) -> bool:
        return self.state in _SALVAGING

    @property
    def paused(self) -> bool:
        return self.state in _PAUSED_STATES

    @property
    def held(self) -> bool:
        """A speculative reply: nothing of it may play until it is released."""
        return self.state in _HELD_STATES

    # ------------------------------------------------------------------ text

    def add_text(self, text: str, at: float) -> None:
        """A piece of the agent's text: whole words go to the outbox, flushed at sentence ends."""
        self.last_text_at = at
        self.pending += text
        pieces, self.pending = split_ready_text(self.pending, final=False)
        self.outbox.extend(pieces)

    def finish_text(self, at: float, apology: str = "") -> None:
        """The agent is done (``apology``: it failed, and these are its last words): the rest of
        the text goes out, and the last piece is flushed."""
        if apology:
            self.pending = f"{self.pending} {apology}" if self.pending.strip() else apology
        self.done_at = at
        pieces, self.pending = split_ready_text(self.pending, final=True)
        self.outbox.extend(pieces)
        if self.outbox and not self.outbox[-1][1]:
            self.outbox[-1] = (self.outbox[-1][0], True)
        elif not self.outbox and self.unflushed:
            self.outbox.append(("", True))

    def take_outbox(self) -> list[tuple[str, bool]]:
        """The pieces to send to the (open) context now; they count as sent."""
        pieces, self.outbox = self.outbox, []
        for text, flush in pieces:
            self.text_sent += text
            self.unflushed = not flush
        return pieces

    def drop_text(self) -> None:
        """The voice failed: text not yet sent will never be voiced."""
        self.pending = ""
        self.outbox.clear()

    def revoice(self) -> bool:
        """The context is gone with the socket: what it had not voiced goes to the next one.
        True if anything is left to voice."""
        voiced = self.track.voiced_prefix(self.text_sent)
        unvoiced = self.text_sent[voiced:]
        self.text_sent = self.text_sent[:voiced]
        self.context_id = None
        self.unflushed = False  # nothing was sent to the next context yet
        self.track.end_of_stream()
        if unvoiced.strip():
            self.outbox.insert(0, (unvoiced.lstrip(), True))
        return bool(self.outbox)

    def heard(self, frames: int | None, *, cut: bool = False) -> ReplyHeard:
        """What the caller heard, for the agent: the whole text when the reply played out whole
        (``frames`` None), else only the words its first ``frames`` played frames voiced. Less than
        the whole reply is ``interrupted``; a cut reply always is."""
        whole = self.text_sent.strip()
        if frames is None:
            return ReplyHeard(self.turn, whole, interrupted=False)
        text = self.track.heard_text(frames, self.text_sent)
        return ReplyHeard(self.turn, text, interrupted=cut or text != whole)

    # ------------------------------------------------------------------ deadlines

    def agent_deadline(self, timeout: float) -> float | None:
        return self.last_text_at + timeout if self.writing else None

    def first_audio_deadline(self, timeout: float) -> float | None:
        return self.done_at + timeout if self.awaiting_audio and self.context_id is not None else None

    def pause_deadline(self, max_pause: float) -> float | None:
        return self.paused_at + max_pause if self.paused_at is not None else None
