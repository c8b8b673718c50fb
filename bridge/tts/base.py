"""The seam between a call and whatever voices it.

ElevenLabs' multi-context socket and the embedded offline voice both sit behind `TtsClient`, so
the core never knows which one it talks to: both take the same `TtsAction`s and report the same
events (`TtsAudio` already PCM16 at the call's rate, which each client is built for; `TtsFinal`
once a closed context is done, `TtsError`, `TtsConnected`, `TtsClosed`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from bridge.core.actions import TtsAction
from bridge.core.events import Event

__all__ = ["Emit", "TtsClient", "TtsConnectError"]

Emit = Callable[[Event], None]
"""Where a client reports events: the call's inbox. Must not block."""


class TtsConnectError(Exception):
    """The TTS could not be reached; ``permanent`` when retrying cannot help (bad key)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TtsClient(Protocol):
    async def connect(self, emit: Emit) -> None:
        """Open the connection and start reporting events to ``emit``; raise `TtsConnectError`."""

    async def send(self, action: TtsAction) -> None:
        """Send one action; if the connection is gone, report `TtsClosed` instead of raising."""

    async def aclose(self) -> None:
        """Say goodbye (``close_socket``), wait briefly for the peer, stop every task."""
