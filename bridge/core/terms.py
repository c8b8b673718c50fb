"""The call's public terms: what it is told (`CallSettings`) and what it shows (`CallState`, `CallSnapshot`).

The server builds the settings from ``bridge.config`` (``bridge.server.factories.call_settings``);
tests and tools use the defaults, or change a field. ``bridge.core.call`` re-exports all three.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from bridge.core.aec import AecConfig
from bridge.core.audio import AudioFormat
from bridge.core.bargein import BargeInConfig
from bridge.core.budget import AecBudget
from bridge.core.echo import EchoConfig
from bridge.core.reply import ReplyState
from bridge.core.turns import TurnConfig
from bridge.core.vad import VadConfig

__all__ = ["CallSettings", "CallSnapshot", "CallState"]


@dataclass(frozen=True, slots=True)
class CallSettings:
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    aec: AecConfig = field(default_factory=AecConfig)  # the echo canceller in front of everything that listens
    aec_budget: AecBudget | None = None  # the worker's canceller slots, shared by its calls (None: no limit)
    turn: TurnConfig = field(default_factory=TurnConfig)  # end of turn: candidates, judge, preemptive replies
    audio: AudioFormat = field(default_factory=AudioFormat)  # the carrier's rate and frame size
    # The carrier's queue is topped up to lead_ms whenever it falls to low_ms: a worker whose pacing
    # timers fire up to low_ms late still leaves the caller no gap (docs/benchmarks.md: at 50 calls
    # on a loaded worker, 300/200 had 2-4 times fewer gaps than 200/100, at the same CPU). A
    # barge-in's `clear` drops the whole queue, so a longer one stops the agent no later.
    lead_ms: int = 300
    low_ms: int = 200
    mark_every_ms: int = 200
    message_ms: int = 100  # agent audio per media message (the frames of one refill, joined)
    max_contexts: int = 5
    keepalive_s: float = 10.0
    drain_timeout_s: float = 20.0
    first_audio_timeout_s: float = 10.0
    preroll_ms: int = 300
    max_utterance_s: float = 60.0
    apology: str = ""  # spoken when the agent fails or times out, so the caller never waits in silence
    turn_end_digit: str = ""  # a DTMF key that ends the caller's turn at once ("" = none)
    agent_timeout_s: float = 10.0  # the agent's limit for its first text, and between two pieces
    start_timeout_s: float = 10.0  # the carrier's limit for ``start`` after the socket opened
    idle_reprompt_s: float = 0.0  # silence after the agent's audio before it speaks again (0 = never)
    idle_hangup_s: float = 0.0  # silence after the agent's audio before the goodbye and hang-up (0 = never)
    goodbye: str = "Goodbye!"  # what the bridge says before it hangs up on a silent caller
    voicemail_message: str = ""  # what an answering machine is told, once, before the hang-up
    mark_grace_s: float = 1.0  # how long past the modelled end of a goodbye to wait for its last mark


class CallState(enum.Enum):
    CONNECTING = "connecting"  # socket up, no ``start`` yet
    LISTENING = "listening"  # no reply in progress
    THINKING = "thinking"  # a reply is wanted, none of its audio has gone out yet
    SPEAKING = "speaking"  # reply audio is out (or still playing at the carrier)
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    state: CallState
    turn: int
    live_context: str | None
    contexts_in_use: int
    peak_contexts: int
    contexts_opened: int
    frames_sent: int
    dropped_audio_chunks: int
    dropped_audio_bytes: int
    barge_ins: int
    malformed_messages: int
    first_audio_at: float | None
    started_at: float | None
    reaction_times: tuple[float, ...]
    ended: bool
    reply: ReplyState | None = None  # the live reply's state, if there is one
    aec_frames: int = 0  # caller frames the echo canceller processed (0: it never ran on this call)
    aec_refused: str = ""  # why the canceller this call's echo called for was first refused or paused: "budget",
    # "lag" (AecBudget), kept if one ran later (aec_frames says whether one did); "": never refused
