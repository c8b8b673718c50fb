"""Where reply text comes from: an agent is an async stream of text per turn.

A turn hands the agent what the caller said (the utterance as 8 kHz PCM16, any DTMF digits);
the agent yields text as it produces it, and the core streams that into a fresh TTS context.
A barge-in cancels the consuming task, so an agent's ``reply`` must let `CancelledError`
through (an ``async for`` over an HTTP stream does). ``heard`` tells the agent what the caller
actually heard of its last reply, so its memory matches the call, not its intentions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Agent", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    number: int  # 0 is the greeting
    utterance: bytes = b""
    digits: str = ""


class Agent(Protocol):
    def reply(self, turn: Turn) -> AsyncIterator[str]:
        """Yield the reply's text in pieces, as soon as each is known."""

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        """What the caller heard of reply ``turn`` (all of it unless ``interrupted``)."""
