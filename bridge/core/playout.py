"""Playout: feeding the carrier a reply's audio, and knowing how much of it the caller heard.

The carrier (Twilio) plays what we send in order and tells us nothing until a ``mark`` we sent
comes back. So the core keeps its own model of the carrier's buffer: ``play_end``, when the last
frame sent will have finished playing. From it follow the three things this module owns:

* pacing: the buffer is topped up to ``lead_ms`` ahead of real time whenever it falls to
  ``low_ms``, so a ``clear`` (barge-in) throws little away and a late refill never starves it.
  A refill's frames go out joined, up to ``message_ms`` of audio per `SendMedia`: the carrier
  plays its queue out in 20 ms packets whatever the message size, and a ``clear`` drops all of
  it but the packet in flight, so fewer, larger messages cost the server less per second of
  audio (one encode and one WebSocket send per message) and change nothing the caller hears;
* the echo reference: every frame is handed to the echo guard with the moment it starts playing,
  and a ``clear`` takes back the frames that never started (`EchoReference`);
* what was heard: marks echoed by the carrier, or else ``play_end`` against the clock, say how many
  frames of a reply reached the caller; the TTS's alignment (or a speaking rate) turns frames
  into text.

A `Track` is one reply's audio; the `Playout` is the carrier's side, shared by the replies of
the call one after another.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from bridge.core.actions import Action, ClearPlayback, SendMark, SendMedia
from bridge.core.audio import AudioFormat, Framer
from bridge.core.deadlines import EPS
from bridge.core.events import Alignment

__all__ = ["CHARS_PER_SECOND", "EchoReference", "PlaybackTerms", "Playout", "Track"]

CHARS_PER_SECOND = 14.0
"""Speaking rate used to guess heard text when the TTS gives no alignment."""


class EchoReference(Protocol):
    """Where the played audio goes so that its echo is not taken for the caller (`Listener`)."""

    def played(self, pcm: bytes, start: float) -> None: ...

    def cleared(self, at: float) -> None: ...


class PlaybackTerms(Protocol):
    """The settings the playout reads (``CallSettings`` has them; the call's terms import this module)."""

    @property
    def audio(self) -> AudioFormat: ...
    @property
    def lead_ms(self) -> int: ...
    @property
    def low_ms(self) -> int: ...
    @property
    def mark_every_ms(self) -> int: ...
    @property
    def message_ms(self) -> int: ...


class Track:
    """One reply's audio: what the TTS sent, what went to the carrier, what the caller heard."""

    __slots__ = (
        "bytes_received", "chars", "chars_voiced", "fmt", "framer", "frames_played", "frames_sent",
        "queue", "sent", "turn",
    )

    def __init__(self, turn: int, fmt: AudioFormat) -> None:
        self.turn = turn
        self.fmt = fmt
        self.queue: deque[bytes] = deque()  # frames not yet sent
        self.framer = Framer(fmt.pcm_frame_bytes)
        self.frames_sent = 0  # net of frames a pause put back
        self.frames_played = 0  # proven by marks
        self.bytes_received = 0
        self.chars: list[tuple[float, str]] = []  # (frame position, char) from the alignment
        self.chars_voiced = 0
        self.sent: deque[bytes] = deque()  # the last frames sent, to put back on a pause

    def receive(self, pcm: bytes, alignment: Alignment | None) -> None:
        """A chunk of the reply's audio from the TTS, with the characters it voices if known."""
        if alignment is not None:
            base = self.bytes_received / self.fmt.pcm_frame_bytes
            for i, char in enumerate(alignment.chars):
                start = alignment.start_ms[i] if i < len(alignment.start_ms) else 0
                self.chars.append((base + start / self.fmt.frame_ms, char))
            self.chars_voiced += len(alignment.chars)
        self.bytes_received += len(pcm)
        self.queue.extend(self.framer.push(pcm))

    def end_of_stream(self) -> None:
        """No more audio will follow this stream: its partial last frame goes out padded."""
        tail = self.framer.flush()
        if tail is not None:
            self.queue.append(tail)

    def voiced_prefix(self, text: str) -> int:
        """How much of ``text`` (everything sent to the TTS) came back as audio, to a word's end
        (alignment, else a guess at the speaking rate)."""
        guess = int(self.bytes_received / self.fmt.pcm_bytes_per_s * CHARS_PER_SECOND)
        voiced = min(self.chars_voiced if self.chars else guess, len(text))
        cut = text.rfind(" ", 0, voiced + 1)
        return cut + 1 if cut >= 0 else 0

    def heard_text(self, frames: int, text: str) -> str:
        """The words of ``text`` voiced by the first ``frames`` frames; a half-heard word was not heard."""
        if self.chars:
            heard = "".join(char for position, char in self.chars if position < frames)
        else:
            heard = text[: int(frames * self.fmt.frame_s * CHARS_PER_SECOND)]
        if heard and len(heard) < len(text) and not heard.endswith(" "):
            heard = heard[: heard.rfind(" ") + 1]
        return heard.strip()


@dataclass(slots=True)
class _Mark:
    name: str
    track: Track
    frames: int
    cleared: bool = False


class Playout:
    """The carrier's buffer as the core models it, for the replies of one call in turn."""

    __slots__ = (
        "_keep_sent", "_last_mark_at", "_lead", "_low", "_mark_every", "_marks", "_per_message", "echo",
        "first_audio_at", "fmt", "frames_sent", "play_end",
    )

    def __init__(self, settings: PlaybackTerms, echo: EchoReference) -> None:
        fmt = settings.audio
        lead_ms = settings.lead_ms
        self.fmt = fmt
        self.echo = echo
        self.play_end = 0.0  # when the last frame sent will have played
        self.frames_sent = 0  # over the whole call
        self.first_audio_at: float | None = None
        self._lead = lead_ms / 1000
        self._low = settings.low_ms / 1000
        self._mark_every = settings.mark_every_ms / 1000
        self._per_message = max(1, settings.message_ms // fmt.frame_ms)  # frames joined into one SendMedia
        self._keep_sent = lead_ms // fmt.frame_ms + 2  # frames that can be waiting at the carrier
        self._last_mark_at = float("-inf")
        self._marks: deque[_Mark] = deque()

    def pump(self, track: Track, now: float, out: list[Action]) -> None:
        """Keep the carrier between ``low_ms`` and ``lead_ms`` ahead of real time."""
        if self.play_end < now:
            self.play_end = now  # its buffer ran dry: playback restarts now
        elif self.play_end - now > self._low + EPS:
            return
        sent = 0
        frame_s = self.fmt.frame_s
        per_message = self._per_message
        joined: list[bytes] = []
        while track.queue and self.play_end - now < self._lead - EPS:
            frame = track.queue.popleft()
            joined.append(frame)
            if len(joined) == per_message:
                out.append(SendMedia(b"".join(joined)))
                joined.clear()
            self.echo.played(frame, self.play_end)  # the echo guard's reference: as it plays
            track.sent.append(frame)
            self.play_end += frame_s
            sent += 1
        if joined:
            out.append(SendMedia(b"".join(joined)))
        while len(track.sent) > self._keep_sent:
            track.sent.popleft()
        if sent:
            self._sent(track, sent, now, out)

    def _sent(self, track: Track, count: int, now: float, out: list[Action]) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        track.frames_sent += count
        self.frames_sent += count
        if now - self._last_mark_at >= self._mark_every or not track.queue:
            name = f"{track.turn}:{track.frames_sent}"
            out.append(SendMark(name))
            self._marks.append(_Mark(name, track, track.frames_sent))
            self._last_mark_at = now

    def clear(self, track: Track, at: float, out: list[Action]) -> None:
        """Stop playback at ``at``: the carrier drops what it has not started, and so does the echo
        guard's reference. The frame in flight finishes; the ones behind it go back to the head
        of the track's queue, so a resume starts exactly where the caller stopped hearing."""
        if track.frames_sent:
            out.append(ClearPlayback())
            for mark in self._marks:
                mark.cleared = True
        unstarted = min(int(max(0.0, self.play_end - at) / self.fmt.frame_s + EPS), len(track.sent))
        for _ in range(unstarted):
            track.queue.appendleft(track.sent.pop())
        track.frames_sent -= unstarted
        self.play_end = at
        self.echo.cleared(at)

    def mark_played(self, name: str) -> None:
        """The carrier echoed mark ``name``: the frames before it played (unless a clear dropped them)."""
        while self._marks:
            mark = self._marks.popleft()
            if mark.name == name:
                if not mark.cleared:
                    mark.track.frames_played = max(mark.track.frames_played, mark.frames)
                return

    def heard_frames(self, track: Track, now: float) -> int:
        """Frames of ``track`` the caller has heard by ``now``: proven by a mark, or played by the clock."""
        unplayed = max(0.0, self.play_end - now) / self.fmt.frame_s
        return max(track.frames_played, track.frames_sent - int(unplayed + 0.999))

    def deadline(self, track: Track, ending: bool) -> float | None:
        """When the track needs the carrier topped up, or (``ending``: no more audio will come)
        when it will have played out."""
        if track.queue:
            return self.play_end - self._low
        return self.play_end if ending else None

    def played_out(self, track: Track, now: float) -> bool:
        return not track.queue and now >= self.play_end - EPS
