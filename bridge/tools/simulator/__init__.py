"""A phone that dials a bridge exactly as Twilio Media Streams do, and measures what the caller hears.

Used by the end-to-end tests, the load benchmark and `bridge call`. The parts:

- `audio`: caller timelines, WAV loading (µ-law is the phone path's own, `bridge.core.audio`);
- `wire`: Twilio's JSON messages, built and parsed;
- `playback`: Twilio's playback queue (marks, clear) as a pure model with explicit times;
- `metrics` / `report`: latency, barge-in, underrun and leak measurements, and the timeline text;
- `phone`: the asyncio client, `PhoneCall` and `run_call`.
"""

from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.tools.simulator.audio import Segment, Timeline, load_wav_8k
from bridge.tools.simulator.metrics import BargeIn, Reply, Underrun
from bridge.tools.simulator.phone import TWILIO_USER_AGENT, PhoneCall, run_call
from bridge.tools.simulator.playback import MarkEcho, PlaybackBuffer, Played, Run
from bridge.tools.simulator.report import CallLog, CallReport

__all__ = [
    "TWILIO_USER_AGENT",
    "BargeIn",
    "CallLog",
    "CallReport",
    "MarkEcho",
    "PhoneCall",
    "PlaybackBuffer",
    "Played",
    "Reply",
    "Run",
    "Segment",
    "Timeline",
    "Underrun",
    "load_wav_8k",
    "pcm_to_ulaw",
    "run_call",
    "ulaw_to_pcm",
]
