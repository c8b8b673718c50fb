"""One server-side context of the fake: its text buffer, its generation queue, and its history.

Plain data with the few transitions the real service applies to a context (protocols.md §1.6, §1.8):
text is buffered until a ``chunk_length_schedule`` step, ``flush`` or ``auto_mode`` triggers it; a
close keeps (or, on a timeout, drops) the unflushed text. No I/O and no clock: times come in.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bridge.testing.fake_elevenlabs.audio import tone_frequency

__all__ = ["DEFAULT_SCHEDULE", "FakeContext", "Segment"]

DEFAULT_SCHEDULE: tuple[int, ...] = (120, 160, 250, 290)


@dataclass(frozen=True)
class Segment:
    """Text whose generation was triggered (by a schedule step, flush, close or auto_mode)."""

    text: str
    triggered_at: float


@dataclass(eq=False)
class FakeContext:
    """One server-side context: its buffer, its generation queue, and what happened to it.

    Identity-hashed on purpose: a reused id is a different context.
    """

    context_id: str
    index: int
    opened_at: float
    implicit: bool
    rng: random.Random
    voice_settings: dict[str, Any] | None = None
    generation_config: dict[str, Any] | None = None
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    text: str = ""  # every character received, concatenated as sent
    flushes: int = 0
    buffer: str = ""  # received, not yet triggered
    step: int = 0  # position in the chunk_length_schedule
    pending: deque[Segment] = field(default_factory=deque)  # triggered, not yet voiced
    last_input: float = 0.0
    last_text_at: float | None = None
    closed: bool = False
    close_reason: str | None = None  # "close_context" | "inactivity" | "close_socket"
    closed_at: float | None = None
    race_dropped: bool = False
    dropped_text: str = ""
    streaming_started: bool = False
    audio_bytes: int = 0
    chunks: int = 0
    audio_after_close: bytearray = field(default_factory=bytearray)
    final_sent: bool = False
    samples_rendered: int = 0
    tone_hz: float = 400.0  # the first context's tone (`tone_frequency`)

    @property
    def frequency(self) -> float:
        return tone_frequency(self.index, self.tone_hz)

    @property
    def timed_out(self) -> bool:
        return self.close_reason == "inactivity"

    @property
    def next_threshold(self) -> int:
        return self.schedule[min(self.step, len(self.schedule) - 1)]

    def add_text(self, text: str, now: float, auto_mode: bool) -> None:
        """Buffer text; trigger generation when the schedule step is reached (or always in auto_mode)."""
        self.text += text
        self.last_text_at = now
        if not self.buffer.strip():
            self.buffer = ""  # the init's single space is not speech
        self.buffer += text
        if auto_mode:
            self.trigger(now)
        elif len(self.buffer) >= self.next_threshold:
            self.trigger(now)
            self.step += 1

    def flush(self, now: float) -> None:
        self.flushes += 1
        self.trigger(now)
        self.step = 0

    def trigger(self, now: float) -> None:
        """Move the buffer to the generation queue; whitespace alone generates nothing."""
        if self.buffer.strip():
            self.pending.append(Segment(self.buffer, now))
        self.buffer = ""

    def close(self, reason: str, now: float, *, keep_buffer: bool) -> None:
        if keep_buffer:
            self.trigger(now)
        else:
            self.dropped_text += self.buffer
            self.buffer = ""
        self.closed, self.close_reason, self.closed_at = True, reason, now

    def drop_everything(self) -> None:
        """The §1.6.4 race: the close overtook the text, nothing of it will be voiced."""
        self.dropped_text += "".join(s.text for s in self.pending) + self.buffer
        self.pending.clear()
        self.buffer = ""
        self.race_dropped = True

    def record_audio(self, chunk: bytes) -> None:
        self.audio_bytes += len(chunk)
        self.chunks += 1
        if self.closed:
            self.audio_after_close += chunk

