"""Shared test helpers: caller speech from ``tests/audio`` and a simulated-time driver for the core."""

from __future__ import annotations

import math
import re
import socket
import struct
import subprocess
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.core.actions import AbandonTurn, Action, SendMedia, StartTurn
from bridge.core.audio import PHONE
from bridge.core.call import Call, CallSettings
from bridge.core.events import CallerAudio, CallStarted, Event, Tick, TtsConnected

SPEECH = Path(__file__).resolve().parent / "audio"
FRAME_BYTES = PHONE.pcm_frame_bytes  # 20 ms of 8 kHz PCM16
FRAME_S = PHONE.frame_s
CONFIG_TOML = Path(__file__).resolve().parents[1] / "config" / "bridge.toml"
# `key = value  # [ENV] meaning`, or the same commented out (secrets, and settings unset by default)
_TOML_LINE = re.compile(r"^#?\s*(\w+)\s*=\s*(.*?)\s+#\s*\[([A-Z0-9_]+)\]\s*(.*)$")


def config_toml() -> dict[tuple[str, str], tuple[str, str]]:
    """(section, key) -> (the value as config/bridge.toml writes it, the env var it names), for
    every key the file lists, set or commented out: what the docs tests hold the docs to."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    section = None
    for line in CONFIG_TOML.read_text(encoding="utf-8").splitlines():
        if header := re.match(r"^\[(\w+)\]", line):
            section = header.group(1)
        elif (match := _TOML_LINE.match(line)) and section:
            found[(section, match.group(1))] = (match.group(2), match.group(3))
    return found


def code_defaults() -> dict[tuple[str, str], Any]:
    """Every field of every section in bridge/config.py, with its default."""
    defaults = Settings()
    return {(section.name, f.name): getattr(getattr(defaults, section.name), f.name)
            for section in fields(Settings) if section.name != "config_file"
            for f in fields(getattr(defaults, section.name))}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test or benchmark starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a server drains), then SIGKILL if it lingers past ``timeout``; returns once it has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def load_wav(name: str) -> bytes:
    """8 kHz mono PCM16 from ``tests/audio`` (the files are already in that format)."""
    with wave.open(str(SPEECH / name), "rb") as w:
        assert w.getframerate() == PHONE.rate and w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.readframes(w.getnframes())


def silence(seconds: float) -> bytes:
    return b"\x00\x00" * int(PHONE.rate * seconds)


def tone(freq: float, seconds: float, level: float = 0.25, rate: int = PHONE.rate) -> bytes:
    n = int(rate * seconds)
    amp = level * 32767
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)))


def frames(pcm: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    pcm += b"\x00" * (-len(pcm) % size)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


@dataclass
class Driver:
    """Plays the shell in simulated time: it delivers events in time order and fires every
    deadline the core asks for, exactly as ``bridge.server.session`` does with a real clock."""

    call: Call = field(default_factory=Call)
    now: float = 0.0
    log: list[tuple[float, Action]] = field(default_factory=list)
    line_at: float | None = None  # when the caller's line last sent a frame (None: not yet started)

    @classmethod
    def started(cls, settings: CallSettings | None = None, tts_up: bool = True) -> Driver:
        driver = cls(Call(settings))
        driver.send(CallStarted(0.0, "MZ1", "CA1"))
        driver.line_at = 0.0
        if tts_up:
            driver.send(TtsConnected(0.0))
        return driver

    def advance(self, to: float) -> list[Action]:
        """Let time pass to ``to``: the line sends silence every 20 ms, as Twilio does, and
        every deadline the core asked for fires on the way."""
        out: list[Action] = []
        while True:
            deadline = self.call.next_deadline()
            frame_at = None if self.line_at is None else round(self.line_at + FRAME_S, 6)
            if frame_at is not None and frame_at <= to and (deadline is None or frame_at < deadline):
                self.line_at = self.now = max(self.now, frame_at)
                out += self._handle(CallerAudio(self.now, silence(FRAME_S)))
                continue
            if deadline is None or deadline > to:
                break
            self.now = max(self.now, deadline)
            out += self._handle(Tick(self.now))
        self.now = max(self.now, to)
        return out

    def send(self, event: Event) -> list[Action]:
        out = self.advance(event.at)
        return out + self._handle(event)

    def _handle(self, event: Event) -> list[Action]:
        actions = self.call.handle(event)
        self.log.extend((event.at, a) for a in actions)
        return actions

    def caller(self, pcm: bytes, start: float) -> list[Action]:
        """The caller's line from ``start``: one 20 ms chunk every 20 ms, like Twilio sends."""
        out = self.advance(start)
        if self.line_at is not None:
            start = self.line_at
        for i, frame in enumerate(frames(pcm)):
            at = round(start + (i + 1) * FRAME_S, 6)
            out += self.advance(at - 1e-9)
            out += self._handle(CallerAudio(at, frame))
            self.now = at
            if self.line_at is not None:
                self.line_at = at
        return out

    def all(self, kind: type) -> list:
        return [a for _, a in self.log if isinstance(a, kind)]

    def frames(self, t: float = 0.0) -> list[tuple[float, bytes]]:
        """The 20 ms frames of agent audio sent from ``t`` on, with when the message holding each was
        sent (a message joins the frames of one refill, up to ``playback.message_ms``)."""
        size = self.call.settings.audio.pcm_frame_bytes
        return [(at, a.pcm[i : i + size]) for at, a in self.log if at >= t and isinstance(a, SendMedia)
                for i in range(0, len(a.pcm), size)]

    def answered(self) -> list[StartTurn]:
        """The turns the caller was answered on: every start but the guesses abandoned at a pause."""
        abandoned = {a.turn for a in self.all(AbandonTurn)}
        return [s for s in self.all(StartTurn) if s.turn not in abandoned]

    def since(self, t: float, kinds: Iterable[type] | None = None) -> list[tuple[float, Action]]:
        wanted = tuple(kinds) if kinds else None
        return [(at, a) for at, a in self.log if at >= t and (wanted is None or isinstance(a, wanted))]
