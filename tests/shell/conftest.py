"""The shell tier: the real app in-process under Starlette's ``TestClient``, no socket anywhere.

Between the core's tests (simulated time) and the end-to-end ones (real uvicorn on 127.0.0.1)
this tier drives the real routes, the real per-call session and the real core, with two
stand-ins injected through ``create_app(make_tts=..., make_agent=...)``:

* `ToneTts`, an in-process `TtsClient` that voices each context as a tone of its own pitch, so
  what reaches the phone tells whose audio it is;
* `ScriptedAgent`, the project's own agent, whose ``history`` records what the caller heard.

`Phone` is Twilio's side of the media stream, driven in real time from the test thread: it sends
a 20 ms frame every 20 ms (silence or caller speech), models Twilio's playback queue with
``bridge.tools.simulator.playback.PlaybackBuffer`` and echoes each mark when the audio before it
has played, or at once on ``clear`` (shared/protocols.md §2.5).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient, WebSocketTestSession

from bridge.agents.scripted import ScriptedAgent
from bridge.config import Settings, load_settings
from bridge.core.actions import CloseContext, OpenContext, SendText, TtsAction
from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.core.events import TtsAudio, TtsConnected, TtsFinal
from bridge.server.app import create_app
from bridge.tools.simulator.playback import PlaybackBuffer
from bridge.tools.simulator.wire import (
    AgentClear,
    AgentMark,
    AgentMedia,
    Malformed,
    ServerMessage,
    StreamIds,
    connected,
    mark_echo,
    media,
    parse,
    start,
    stop,
)
from bridge.tts.base import Emit

__all__ = ["Phone", "Shell", "ToneTts", "build", "pitch", "settings_for"]

REPO = Path(__file__).resolve().parents[2]
RATE = 8000
FRAME_S = 0.02
MS_PER_CHAR = 40  # the fake voice speaks a character every 40 ms: "Hello." lasts 240 ms
TONE_DBFS = -26.0  # well below caller speech, as an agent's echo would be


def settings_for(script: Path, **env: str) -> Settings:
    """Settings as the server reads them, from ``config/bridge.toml`` and ``env`` only."""
    environ = {"BRIDGE_AGENT_SCRIPT": str(script), "BRIDGE_LOG_LEVEL": "warning"} | env
    return load_settings(environ, config_path=REPO / "config" / "bridge.toml", dotenv=False)


def tone(frequency: float, seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    amplitude = 10 ** (TONE_DBFS / 20) * 32767
    return np.round(amplitude * np.sin(2 * math.pi * frequency * t)).astype("<i2").tobytes()


def pitch(pcm: bytes) -> float:
    """The strongest frequency in ``pcm`` (8 kHz PCM16), to within the FFT's bin width."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[int(np.argmax(spectrum))])


class ToneTts:
    """A `TtsClient` in the same process: each context is voiced as a tone of its own pitch.

    Text becomes audio at once (``MS_PER_CHAR`` per character); ``CloseContext`` answers with
    ``TtsFinal``, as the real service does once it has voiced what it holds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._emit: Emit | None = None
        self.sent: list[TtsAction] = []
        self.pitches: dict[str, float] = {}
        self.spoken_s: dict[str, float] = {}  # seconds of audio made per context
        self.closed = False

    async def connect(self, emit: Emit) -> None:
        self._emit = emit
        emit(TtsConnected(self._clock()))

    async def send(self, action: TtsAction) -> None:
        assert self._emit is not None, "an action before connect"
        self.sent.append(action)
        match action:
            case OpenContext(context_id=cid):
                self.pitches[cid] = 300.0 + 400.0 * len(self.pitches)
            case SendText(context_id=cid, text=text) if text.strip():
                pcm = tone(self.pitches[cid], len(text) * MS_PER_CHAR / 1000)
                self.spoken_s[cid] = self.spoken_s.get(cid, 0.0) + len(pcm) / 2 / RATE
                self._emit(TtsAudio(self._clock(), cid, pcm))
            case CloseContext(context_id=cid):
                self._emit(TtsFinal(self._clock(), cid))
            case _:
                pass

    async def aclose(self) -> None:
        self.closed = True

    def opened(self) -> list[str]:
        return [a.context_id for a in self.sent if isinstance(a, OpenContext)]

    def closed_contexts(self) -> list[str]:
        return [a.context_id for a in self.sent if isinstance(a, CloseContext)]


@dataclass
class Shell:
    """The app under test and every TTS client and agent it made, in order."""

    app: Starlette
    settings: Settings
    lines: list[str]
    tts: list[ToneTts] = field(default_factory=list)
    agents: list[ScriptedAgent] = field(default_factory=list)


def build(tmp_path: Path, lines: list[str], **env: str) -> Shell:
    """The app with ``lines`` as the agent's script (the first greets) and ``env`` as settings."""
    script = tmp_path / "agent.txt"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = settings_for(script, **env)
    tts: list[ToneTts] = []
    agents: list[ScriptedAgent] = []

    def make_tts(_: Settings, clock: Callable[[], float], rate: int = 8000) -> ToneTts:
        tts.append(ToneTts(clock))
        return tts[-1]

    def make_agent(_: Settings) -> ScriptedAgent:
        agents.append(ScriptedAgent(lines, delay_s=0.005))
        return agents[-1]

    app = create_app(settings, make_tts=make_tts, make_agent=make_agent)
    return Shell(app, settings, lines, tts, agents)


@pytest.fixture
def client_for() -> Iterator[Callable[[Shell], TestClient]]:
    """A ``TestClient`` per app, entered (so the lifespan runs) and closed after the test."""
    opened: list[TestClient] = []

    def open_client(shell: Shell) -> TestClient:
        client = TestClient(shell.app)
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in reversed(opened):
        client.__exit__(None, None, None)


class Phone:
    """Twilio's end of one media stream, in real time, over a ``TestClient`` WebSocket session."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws
        self.ids = StreamIds.new()
        self.playback = PlaybackBuffer()
        self.received: list[tuple[float, ServerMessage]] = []
        self.echoed: list[str] = []
        self.close_code: int | None = None
        self._seq = 0
        self._chunk = 0
        self._next_frame: float | None = None
        self._incoming: queue.SimpleQueue[tuple[float, dict[str, object]]] = queue.SimpleQueue()
        threading.Thread(target=self._read, name="phone-reader", daemon=True).start()

    def _read(self) -> None:
        """``receive`` blocks without a timeout, so it runs here and the test polls a queue."""
        while True:
            try:
                message = self.ws.receive()
            except Exception:  # the session is gone
                message = {"type": "websocket.close", "code": None}
            self._incoming.put((time.monotonic(), message))
            if message["type"] == "websocket.close":
                return

    def _send(self, text: str) -> None:
        self._seq += 1
        self.ws.send_text(text)

    def start(self) -> None:
        self.ws.send_text(connected())
        self._send(start(self._seq + 1, self.ids, {}))
        self._next_frame = time.monotonic()

    def _frame(self, pcm: bytes) -> None:
        assert self._next_frame is not None, "start() first"
        delay = self._next_frame - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._next_frame = max(self._next_frame + FRAME_S, time.monotonic() - 0.1)  # catch up, never burst
        self._chunk += 1
        self._send(media(self._seq + 1, self.ids, self._chunk, self._chunk * 20, pcm_to_ulaw(pcm)))
        self.pump()

    def pump(self) -> None:
        """Take in what the bridge sent, as Twilio would, and echo the marks now due."""
        while True:
            try:
                at, message = self._incoming.get_nowait()
            except queue.Empty:
                break
            if message["type"] == "websocket.close":
                self.close_code = message.get("code")  # type: ignore[assignment]
                continue
            parsed = parse(message.get("text") or message.get("bytes") or b"", self.ids.stream_sid)  # type: ignore[arg-type]
            self.received.append((at, parsed))
            match parsed:
                case AgentMedia(ulaw=ulaw):
                    self.playback.push_audio(at, ulaw)
                case AgentMark(name=name):
                    self.playback.push_mark(at, name)
                case AgentClear():
                    self._echo([echo.name for echo in self.playback.clear(at)])
                case Malformed():
                    pass
        if self.close_code is None:
            self._echo([echo.name for echo in self.playback.due_marks(time.monotonic())])

    def _echo(self, names: list[str]) -> None:
        for name in names:
            self.echoed.append(name)
            self._send(mark_echo(self._seq + 1, self.ids, name))

    def talk(self, pcm: bytes) -> tuple[float, float]:
        """The caller says ``pcm`` (8 kHz PCM16), frame by frame; returns when it began and ended."""
        began = time.monotonic()
        for i in range(0, len(pcm), int(RATE * FRAME_S) * 2):
            self._frame(pcm[i : i + int(RATE * FRAME_S) * 2].ljust(int(RATE * FRAME_S) * 2, b"\0"))
        return began, time.monotonic()

    def listen(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Silence on the line for ``seconds``, or until ``until()`` holds (then True)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.close_code is None:
            if until is not None and until():
                return True
            self._frame(bytes(int(RATE * FRAME_S) * 2))
        self.pump()
        return until is not None and until()

    def wait_closed(self, seconds: float) -> bool:
        """Until the bridge closes the socket (the line stays open and silent meanwhile)."""
        return self.listen(seconds, until=lambda: self.close_code is not None) or self.close_code is not None

    def hang_up(self, seconds: float = 5.0) -> int | None:
        """Twilio's ``stop``, then until the bridge has closed the socket: its close code.

        A test leaves the ``websocket_connect`` block only after this, so the ``TestClient`` never
        cancels the app in the middle of a call's teardown."""
        self._send(stop(self._seq + 1, self.ids))
        self.wait_closed(seconds)
        return self.close_code

    # ---------------------------------------------------------------- what the caller got

    def of(self, kind: type, after: float = 0.0) -> list[tuple[float, ServerMessage]]:
        return [(at, m) for at, m in self.received if isinstance(m, kind) and at >= after]

    def media_pcm(self, after: float = 0.0, before: float = math.inf) -> list[bytes]:
        """The PCM of each media message received in ``[after, before)``."""
        return [ulaw_to_pcm(m.ulaw) for at, m in self.received
                if isinstance(m, AgentMedia) and after <= at < before]
