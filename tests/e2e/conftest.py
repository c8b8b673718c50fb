"""End-to-end fixtures: the real app under uvicorn on 127.0.0.1, a protocol-faithful local
ElevenLabs server (``bridge.testing.fake_elevenlabs``, standing in for the cloud API), and the
Twilio-protocol phone simulator. Real sockets, real webrtcvad, real transcoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette

from bridge.config import Settings, load_settings
from bridge.server.app import WS_MAX_SIZE, create_app
from bridge.server.wsframes import FrameProtocol
from bridge.testing.fake_elevenlabs import FakeElevenLabs

REPO = Path(__file__).resolve().parents[2]
API_KEY = "sk-test-0123456789abcdef"

GREETING = (
    "Hello and welcome to the bridge demo line. I can tell you about our opening hours, "
    "our delivery options and your appointments. What would you like to know today?"
)
REPLIES = ["Sure, I can help with that. Let me look it up.", "Of course. Anything else?", "Thanks for calling."]


@dataclass
class RunningBridge:
    app: Starlette
    port: int
    settings: Settings

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live_calls(self) -> int:
        return len(self.app.state.bridge.calls)


def write_script(path: Path, lines: list[str] | None = None) -> Path:
    path.write_text("\n".join(lines or [GREETING, *REPLIES]) + "\n", encoding="utf-8")
    return path


def bridge_settings(fake: FakeElevenLabs | None, script: Path, **env: str) -> Settings:
    environ = {"BRIDGE_AGENT_SCRIPT": str(script), "BRIDGE_LOG_LEVEL": "debug"}
    if fake is not None:
        environ |= {"ELEVENLABS_API_KEY": API_KEY, "ELEVENLABS_BASE_URL": fake.base_url, "BRIDGE_TTS": "elevenlabs"}
    environ |= env
    return load_settings(environ, config_path=REPO / "config" / "bridge.toml", dotenv=False)


@contextlib.asynccontextmanager
async def serve(settings: Settings, **kwargs: object) -> AsyncIterator[RunningBridge]:
    """The real app under a real uvicorn server, on a free loopback port, with the WebSocket
    protocol and frame limit it ships with (``python -m bridge.app``)."""
    app = create_app(settings, **kwargs)  # type: ignore[arg-type]
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                            ws=FrameProtocol, ws_max_size=WS_MAX_SIZE)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningBridge(app, port, settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def fake_tts() -> AsyncIterator[FakeElevenLabs]:
    async with FakeElevenLabs(api_key=API_KEY, seed=7) as fake:
        yield fake


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "agent.txt")


def tone_share(pcm: bytes, freq: float, rate: int = 8000) -> float:
    """Share of the signal's energy within ±40 Hz of ``freq`` (0 for silence)."""
    x = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    if len(x) < 160 or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    band = (freqs > freq - 40) & (freqs < freq + 40)
    return float(spectrum[band].sum() / spectrum.sum())


def window(pcm: bytes, start: float, end: float, rate: int = 8000) -> bytes:
    return pcm[int(start * rate) * 2 : int(end * rate) * 2]


def contexts_in_order(fake: FakeElevenLabs, conn: int = 0) -> list[str]:
    return list(fake.contexts(conn).keys())


def first_messages(fake: FakeElevenLabs, conn: int = 0) -> Mapping[str, dict]:
    firsts: dict[str, dict] = {}
    for _, message in fake.connections[conn].messages:
        cid = message.get("context_id")
        if isinstance(cid, str) and cid not in firsts:
            firsts[cid] = message
    return firsts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests run real servers in real time on a machine shared with other work: one
    that fails is run once more before it counts (pytest-rerunfailures, reported as a rerun), so a
    scheduling stall is told from a fault. A fault fails twice."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.flaky(reruns=1))

