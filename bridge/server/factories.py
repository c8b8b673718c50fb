"""Turning settings into the parts of a call: which TTS voices it, which agent answers.

Kept apart from the app so tests and tools (the phone simulator, the benchmark) can build a
call's parts the same way the server does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from bridge.agents.base import Agent
from bridge.agents.conversation import ConversationAgent
from bridge.agents.loader import load_factory
from bridge.agents.openai import OpenAIAgent, OpenAITranscriber
from bridge.agents.scripted import ScriptedAgent, load_script
from bridge.agents.stt.base import StreamingTranscriber
from bridge.agents.stt.deepgram import DeepgramTranscriber
from bridge.agents.tools import TransferPolicy
from bridge.agents.webhook import WebhookAgent
from bridge.config import Settings
from bridge.core.audio import SAMPLE_RATE
from bridge.core.budget import AecBudget
from bridge.core.call import CallSettings
from bridge.server import metrics
from bridge.server.warm import WarmPool
from bridge.tts.base import TtsClient
from bridge.tts.elevenlabs import ElevenLabsCodec, ElevenLabsTts, stream_url
from bridge.tts.fallback import FallbackTts, Voice
from bridge.turn import HeuristicJudge, TurnJudge

__all__ = [
    "MakeTts",
    "call_settings",
    "make_agent",
    "make_cloud_tts",
    "make_judge",
    "make_stt",
    "make_tts",
    "make_warm_pool",
    "offline_voice_available",
    "output_format",
    "tts_engine",
    "voice_warning",
]

log = logging.getLogger("bridge.server.factories")

MakeTts = Callable[[Settings, Callable[[], float], int], TtsClient]
"""How the app gets a call's voice: ``make_tts(settings, clock, rate)``, ``rate`` the call's (8000 or 16000 Hz)."""


def tts_engine(settings: Settings) -> str:
    """``elevenlabs`` or ``local``: ``auto`` picks ElevenLabs when an API key is set."""
    choice = settings.server.tts
    if choice == "auto":
        return "elevenlabs" if settings.elevenlabs.api_key else "local"
    return choice


def voice_warning(settings: Settings) -> str | None:
    """What an operator must hear when calls get the offline voice only because no ElevenLabs key
    is set (``tts = "auto"``): a deploy that forgot the key still answers, so nothing else tells.
    ``None`` when the voice is the one asked for (a key, or ``tts = "local"`` on purpose)."""
    if settings.server.tts != "auto" or settings.elevenlabs.api_key:
        return None
    return ("no ElevenLabs API key: calls use the offline espeak-ng voice; set ELEVENLABS_API_KEY "
            "(environment or .env) for ElevenLabs, or BRIDGE_TTS=local to choose the offline voice")


def call_settings(settings: Settings, aec_budget: AecBudget | None = None) -> CallSettings:
    """The core's settings for one call: [vad], [barge_in], [echo] and [aec] already are the core's own;
    ``aec_budget``: the worker's echo canceller slots, one for all its calls (None: no limit)."""
    playback = settings.playback
    return CallSettings(
        vad=settings.vad,
        barge_in=settings.barge_in,
        echo=settings.echo,
        aec=settings.aec,
        aec_budget=aec_budget,
        turn=settings.turn,
        lead_ms=playback.lead_ms,
        low_ms=playback.low_ms,
        mark_every_ms=playback.mark_every_ms,
        message_ms=playback.message_ms,
        apology=settings.agent.apology,
        turn_end_digit="" if settings.agent.turn_end_digit == "off" else settings.agent.turn_end_digit,
        agent_timeout_s=settings.agent.timeout_s,
        idle_reprompt_s=settings.agent.idle_reprompt_s,
        idle_hangup_s=settings.agent.idle_hangup_s,
        goodbye=settings.agent.goodbye,
        voicemail_message=settings.agent.voicemail_message,
    )


def output_format(settings: Settings, rate: int = SAMPLE_RATE) -> str:
    """What a call at ``rate`` asks ElevenLabs for: on an 8 kHz call the configured format; on a
    wideband call PCM at the call's own rate (``pcm_16000``), which plays with no conversion."""
    return settings.elevenlabs.output_format if rate == SAMPLE_RATE else f"pcm_{rate}"


def elevenlabs_query(settings: Settings, rate: int = SAMPLE_RATE) -> dict[str, Any]:
    el = settings.elevenlabs
    return {
        "model_id": el.model_id,
        "output_format": output_format(settings, rate),
        "inactivity_timeout": el.inactivity_timeout,
        "sync_alignment": el.sync_alignment,
        "auto_mode": el.auto_mode,
    }


@functools.cache
def offline_voice_available() -> bool:
    """Whether the offline espeak-ng voice can speak here (the ``voice`` extra and the library)."""
    try:
        from bridge.tts import espeak, local  # noqa: F401  (optional extra: bridge[voice])

        espeak.find_library()
    except (ImportError, OSError, RuntimeError):
        return False
    return True


def make_tts(settings: Settings, clock: Callable[[], float], rate: int = SAMPLE_RATE) -> TtsClient:
    """The call's voice, delivering audio at the call's ``rate``: ElevenLabs, failing over to the
    offline voice (at the same rate) for the rest of the call when its socket is unusable for good
    (`FallbackTts`), or the offline voice alone."""
    if tts_engine(settings) == "local":
        from bridge.tts.local import LocalTts  # optional extra: bridge[voice]

        return LocalTts(clock=clock, rate=rate)
    cloud = make_cloud_tts(settings, clock, rate)
    if not offline_voice_available():
        return cloud
    from bridge.tts.local import LocalTts

    voices = [Voice("elevenlabs", cloud), Voice("offline", LocalTts(clock=clock, rate=rate))]
    return FallbackTts(voices, clock=clock, on_failover=metrics.tts_failover)


def make_cloud_tts(settings: Settings, clock: Callable[[], float], rate: int = SAMPLE_RATE) -> TtsClient:
    """ElevenLabs alone, with no voice behind it (what `make_tts` fails over from)."""
    el = settings.elevenlabs
    assert el.api_key, "config validation guarantees a key for the elevenlabs engine"
    return ElevenLabsTts(
        url=stream_url(el.base_url, el.voice_id, elevenlabs_query(settings, rate)),
        api_key=el.api_key,
        codec=ElevenLabsCodec(output_format(settings, rate), el.voice_settings(), rate=rate),
        clock=clock,
    )


def make_warm_pool(settings: Settings, make: Callable[[int], TtsClient]) -> WarmPool | None:
    """The worker's TTS sockets opened at the voice webhook (`bridge.server.warm`), or None: with the
    offline voice alone there is no socket to open early, and ``warm_tts_s = 0`` turns it off. A warm
    socket waits at most half the TTS's inactivity timeout, so the server never drops it idle."""
    ttl = min(settings.server.warm_tts_s, settings.elevenlabs.inactivity_timeout / 2)
    if ttl <= 0 or tts_engine(settings) == "local":
        return None
    return WarmPool(make, ttl_s=ttl, size=settings.server.max_calls, clock=lambda: asyncio.get_running_loop().time())


def make_agent(settings: Settings) -> Agent:
    """A fresh agent for one call, behind the conversation layer (transcripts, heard-text history)."""
    a = settings.agent
    inner: Agent
    transcriber = None
    if a.transcribes():
        stt_url, stt_key = a.stt_endpoint()
        transcriber = OpenAITranscriber(stt_url, stt_key, a.stt_model, language=a.stt_language)
    if a.kind == "scripted":
        # a.script None (settings built in code): the demo script
        inner = ScriptedAgent(load_script(a.script), idle_prompt=a.idle_prompt)
    elif a.kind == "openai":
        inner = OpenAIAgent(a.openai_base_url, a.openai_api_key, a.llm_model, a.system_prompt,
                            client=transcriber.client if transcriber else None, tools=a.tools,
                            transfers=TransferPolicy.parse(a.transfer_numbers or ""))
    elif a.kind == "webhook":
        assert a.webhook_url, "config validation guarantees a URL for the webhook agent"
        inner = WebhookAgent(a.webhook_url, secret=a.webhook_secret, send_audio=a.webhook_audio)
    else:
        inner = load_factory(a.kind)(settings)
    greeting = (a.greeting or "") if a.kind in ("openai", "webhook") else ""
    return ConversationAgent(inner, transcriber=transcriber, greeting=greeting)


def make_judge(settings: Settings) -> TurnJudge:
    """The end-of-turn judge: the heuristic (text rules and prosody, ~2 ms), or with ``[turn] model``
    the Smart Turn model for the audio, the text rules still overruling it where the words are decisive."""
    model = _smart_turn() if settings.turn.model else None
    return HeuristicJudge(audio=model) if model is not None else HeuristicJudge()


@functools.cache
def _smart_turn() -> TurnJudge | None:
    """The model, loaded once per worker (its session is shared: onnxruntime runs are thread-safe)."""
    from bridge.turn.smart_turn import SmartTurnJudge, TurnModelUnavailable

    try:
        return SmartTurnJudge()
    except TurnModelUnavailable as exc:
        log.warning("end of turn: [turn] model is on but unavailable (%s); using the heuristic judge", exc)
        return None


def make_stt(settings: Settings) -> StreamingTranscriber | None:
    """The live transcriber for one call (``BRIDGE_STT``), or None."""
    s = settings.stt
    if s.engine != "deepgram" or not s.deepgram_api_key:
        return None
    return DeepgramTranscriber(s.deepgram_api_key, base_url=s.deepgram_base_url, model=s.deepgram_model,
                               language=s.language)
