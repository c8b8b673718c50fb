"""The fake's fault knobs: the ways a test makes the service misbehave, as a real one sometimes does.

Kept apart from the protocol so that the protocol module describes only what the real service does
on every connection, and a test reads here what it can switch on: refused handshakes (HTTP 503),
an error frame right after the accept, the close-before-synthesis race of protocols.md §1.6.4,
shortened inactivity timeouts, and audio held back. Every knob is a plain attribute (or a method)
that may change while the server runs; dropping live sockets is :meth:`FakeElevenLabs.drop_all`,
since it needs the connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.testing.fake_elevenlabs.protocol import Failure, SessionParams, parse_query

__all__ = ["FaultKnobs"]


class FaultKnobs:
    """What :class:`~bridge.testing.fake_elevenlabs.FakeElevenLabs` does wrong on purpose, when told."""

    def __init__(
        self,
        *,
        reject_connections: int = 0,
        error_on_connect: dict[str, Any] | None = None,
        close_race_ms: float = 0.0,
        timeout_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        """
        Args:
            reject_connections: refuse the next N handshakes with HTTP 503.
            error_on_connect: send this error frame and close 1008 right after every accept.
            close_race_ms: a close_context within this many ms of the context's last text, before
                any of its audio was made, yields isFinal with zero audio (§1.6.4). 0 = off.
            timeout_scale: multiplies the effective ``inactivity_timeout`` (20 s default), so tests
                can exercise timeouts in milliseconds.
            seed: seeds the chunk sizes, so runs are reproducible.
        """
        self.reject_connections = reject_connections
        self.error_on_connect = error_on_connect
        self.close_race_ms = close_race_ms
        self.timeout_scale = timeout_scale
        self.seed = seed
        self.generation_gate = asyncio.Event()
        """Workers wait on it before every chunk: cleared, all audio (and finals behind it) is held."""
        self.generation_gate.set()

    def take_rejection(self) -> bool:
        """Whether this handshake is refused with 503; each refusal uses up one of ``reject_connections``."""
        if self.reject_connections <= 0:
            return False
        self.reject_connections -= 1
        return True

    def error_after_accept(self) -> Failure | None:
        """The ``error_on_connect`` frame as the way this socket ends, if one is set."""
        return Failure(dict(self.error_on_connect)) if self.error_on_connect is not None else None

    def session_params(self, query: dict[str, str]) -> SessionParams:
        """The connection's parameters with the timeout scale, close race and seed applied.

        Raises ``ValueError`` for a query the fake refuses to serve (see :func:`parse_query`).
        """
        return parse_query(query, timeout_scale=self.timeout_scale, close_race_ms=self.close_race_ms, seed=self.seed)

    def pause_generation(self) -> None:
        """Hold all audio (and finals behind it) until :meth:`resume_generation`."""
        self.generation_gate.clear()

    def resume_generation(self) -> None:
        """Let held audio flow again, from where each context stopped."""
        self.generation_gate.set()
