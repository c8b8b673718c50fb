"""What every benchmark call says and hears, and what the bridge's VAD will decide about it.

Each call is the same shape, so every call yields every measurement: the greeting (its latency),
a barge-in into it (reaction), a reply after the barge-in that plays to its end (frame lateness,
reply latency), a short "yes" from the caller, a long reply, and the next barge-in into that, and
so on every ``CYCLE_S`` seconds. The caller's lines are real speech from ``tests/audio``.

The bridge's VAD is deterministic, so we replay the caller's line through the very same
`SpeechDetector` offline: that tells, to the frame, when the bridge decides the caller started or
stopped talking. Everything after that decision is the bridge's (and the sockets') doing, which is
what the benchmark means by overhead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import load_settings
from bridge.core.audio import PCM_FRAME_BYTES, pcm_to_ulaw, ulaw_to_pcm
from bridge.core.call import CallSettings
from bridge.core.vad import SpeechDetector, SpeechEnded, SpeechStarted
from bridge.server import factories
from bridge.tools.simulator import Timeline

__all__ = [
    "AUDIO_DIR",
    "CYCLE_S",
    "FIRST_BARGE_S",
    "SCRIPT",
    "Scenario",
    "VadDecision",
    "call_duration",
    "call_settings",
    "vad_decisions",
]

AUDIO_DIR = Path(__file__).resolve().parents[1] / "tests" / "audio"

# First line greets (long, so it can be barged into); then the scripted agent answers with the
# other lines in turn: short (heard to its end), long (barged into), short, long...
# Each reply opens with a one-word sentence, flushed to the TTS with the agent's first piece, so
# the agent's own pacing adds nothing to the time to first audio.
SCRIPT = (
    "Hello. Thanks for calling the bridge benchmark line, where every answer is scripted and every "
    "voice is a tone. How can I help you today?",
    "Sure. I can help with that right away.",
    "Certainly. Let me read the whole list for you, slowly and clearly, from the very first item "
    "to the very last one, so that nothing at all is missed.",
)
BARGE_FILES = ("caller_03.wav", "caller_02.wav", "caller_01.wav", "caller_05.wav", "caller_08.wav")
YES_FILE = "caller_04.wav"
FIRST_BARGE_S = 2.0  # into the greeting
YES_AFTER_S = 6.6  # after the barge-in starts: the short reply has ended by then
CYCLE_S = 10.0  # the next barge-in, about 2 s into the long reply


def call_duration(cycles: int) -> float:
    """A call of ``cycles`` barge-in cycles, ending 2 s into the last long reply."""
    return FIRST_BARGE_S + CYCLE_S * cycles


@dataclass(frozen=True, slots=True)
class VadDecision:
    """The bridge's VAD changes its mind at ``at`` (call time, s): speech ``started`` or ended."""

    at: float
    started: bool


@dataclass(frozen=True)
class Scenario:
    """One caller variant: the timeline the phone plays, and the VAD decisions it will cause."""

    variant: int
    duration: float
    timeline: Timeline
    decisions: tuple[VadDecision, ...]

    @classmethod
    def build(cls, variant: int, cycles: int, settings: CallSettings) -> Scenario:
        duration = call_duration(cycles)
        barge = AUDIO_DIR / BARGE_FILES[variant % len(BARGE_FILES)]
        placements: list[tuple[float, Path]] = []
        for k in range(cycles):
            start = FIRST_BARGE_S + k * CYCLE_S
            placements += [(start, barge), (start + YES_AFTER_S, AUDIO_DIR / YES_FILE)]
        timeline = Timeline.from_files(placements)
        return cls(variant, duration, timeline, vad_decisions(timeline, duration, settings))


def call_settings(env: Mapping[str, str], config: Path) -> CallSettings:
    """The settings the server builds each call from, given its environment and config file."""
    return factories.call_settings(load_settings(env, config_path=config, dotenv=False))


def vad_decisions(timeline: Timeline, duration: float, settings: CallSettings) -> tuple[VadDecision, ...]:
    """The listener's decisions on the line as the bridge receives it: µ-law, one 20 ms frame at a
    time, frame k arriving at (k + 1) × 20 ms, the moment the phone sends it.

    The listener is built as the core builds its own (`bridge.core.call.Call`), so gates and tunables
    are the server's. The simulated line carries no echo of the agent, so the echo reference is
    left empty: on this line, the agent's audio never reaches the listener.
    """
    listener = _listener(settings)
    pcm = _line(timeline, duration)
    step = PCM_FRAME_BYTES
    out: list[VadDecision] = []
    for k in range(len(pcm) // step):
        for change in listener.feed(pcm[k * step : (k + 1) * step], (k + 1) * 0.02):
            if isinstance(change, SpeechStarted | SpeechEnded):
                out.append(VadDecision(round(change.at, 6), isinstance(change, SpeechStarted)))
    return tuple(out)


def _listener(settings: CallSettings) -> Any:
    try:
        from bridge.core.bargein import Listener
    except ImportError:  # a core without barge-in gates: the plain detector is all it listens with
        return SpeechDetector(settings.vad)
    return Listener(settings.vad, getattr(settings, "barge_in", None), getattr(settings, "echo", None))


def _line(timeline: Timeline, duration: float) -> bytes:
    n_frames = max(1, round(duration / 0.02))
    return ulaw_to_pcm(pcm_to_ulaw(timeline.render(n_frames * 0.02)))
