"""The caller's words for the agent: an utterance starts at its onset, not at its detection.

Speech is detected ``start_ms`` after it starts, and a soft start ("so...") even later, so the
recent audio is kept (``keep_ms``: the call's ``preroll_ms`` plus the detection window) and
becomes the head of the utterance once speech starts. An utterance is capped at ``max_utterance_s``: a caller who never
stops cannot grow a call's memory without bound.
"""

from __future__ import annotations

from collections import deque

from bridge.core.audio import AudioFormat

__all__ = ["Recorder"]


class Recorder:
    """The caller's recent audio, and the utterance in progress."""

    __slots__ = ("_limit", "_max_bytes", "_preroll", "_preroll_bytes", "_utterance", "_utterance_bytes")

    def __init__(self, fmt: AudioFormat, keep_ms: int, max_utterance_s: float) -> None:
        self._limit = fmt.pcm_bytes(keep_ms)
        self._max_bytes = max_utterance_s * fmt.pcm_bytes_per_s
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._utterance: list[bytes] | None = None
        self._utterance_bytes = 0

    @property
    def recording(self) -> bool:
        return self._utterance is not None

    def remember(self, pcm: bytes) -> None:
        """A chunk of caller audio: part of the utterance if one is open, else of the preroll."""
        if self._utterance is not None:
            if self._utterance_bytes < self._max_bytes:
                self._utterance.append(pcm)
                self._utterance_bytes += len(pcm)
            return
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        while self._preroll_bytes - len(self._preroll[0]) >= self._limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    def begin(self) -> None:
        """Speech started: the utterance opens with the audio kept from before it was detected."""
        self._utterance = list(self._preroll)
        self._utterance_bytes = self._preroll_bytes
        self._preroll.clear()
        self._preroll_bytes = 0

    def peek(self) -> bytes:
        """The utterance so far, which goes on (a tentative turn's words); b"" if none is open."""
        return b"".join(self._utterance) if self._utterance is not None else b""

    def take(self) -> bytes | None:
        """The utterance so far, which ends here; None if none was open."""
        utterance = self._utterance
        self.drop()
        return None if utterance is None else b"".join(utterance)

    def drop(self) -> None:
        """The sound was nothing: forget it."""
        self._utterance = None
        self._utterance_bytes = 0
