"""CPU per 20 ms frame of the bridge's own code, in one process, without sockets.

    python -m bench.frame                   # three line conditions, medians of 5 repeats
    python -m bench.frame --carrier vonage  # the same on Vonage's 16 kHz line, a wideband call
    python -m bench.frame --profile         # and the functions that cost the most (cProfile)

The load benchmark (`bench.load`) measures the whole server, sockets and event loop included,
on a shared machine. This one isolates the per-frame work a call adds on top of them, which is
what a change to the codec or the core can move: a Twilio media message is decoded, the core
handles it (VAD, noise and echo gates, pacing, timers), and every phone action it returns is
encoded, exactly as `bridge.server.session` does, but fed from memory with simulated time. Being
deterministic and free of I/O, its figures move by a few per cent between runs, not tens. The
line is made in a first pass (the echo depends on what the core played); a second, fresh call is
timed on the recorded messages, in CPU time, so other processes on the machine do not count.
With ``--carrier vonage`` the line is Vonage's: binary 16 kHz PCM frames, and the call runs at
16 kHz end to end (the speech is raised to 16 kHz once, before the run).

Conditions: the caller silent on a quiet line; the caller talking (real speech from
``tests/audio``) while the agent is silent; the agent talking on a line without echo (most
calls: the echo guard runs, the echo canceller's probe finds nothing to cancel); the agent
talking with its echo 20 dB down on the line (the echo guard's busiest case, and loud enough
that the echo canceller engages).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np
import soxr

from bridge.carriers.base import CarrierCodec, call_settings_for, frames
from bridge.carriers.twilio.codec import TwilioCodec
from bridge.carriers.vonage.codec import VonageCodec
from bridge.core.actions import ClearPlayback, OpenContext, SendMark, SendMedia
from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.core.call import Call, CallSettings
from bridge.core.events import AgentDone, AgentText, CallStarted, Event, TtsAudio, TtsConnected
from bridge.tools.simulator import wire
from tests.support import load_wav
from tests.turntaking import pcm16, samples

__all__ = ["main", "per_frame_us"]

IDS = wire.StreamIds("ACbench", "MZbench", "CA")
FRAME_S = 0.02
PHONE_ACTIONS = (SendMedia, SendMark, ClearPlayback)
CARRIERS = ("twilio", "vonage")
Message = str | bytes


class _Carrier:
    """One carrier's line: its codec, its inbound messages, and what its phone plays of a frame."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rate = 8000 if name == "twilio" else 16000

    def codec(self) -> CarrierCodec:
        if self.name == "twilio":
            codec: CarrierCodec = TwilioCodec()
            start = '{"event":"start","streamSid":"MZbench","start":{"streamSid":"MZbench","callSid":"CA"}}'
        else:
            codec = VonageCodec()
            start = '{"event":"websocket:connected","content-type":"audio/l16;rate=16000","call_uuid":"CA"}'
        codec.decode(start, 0.0)
        return codec

    def at_rate(self, pcm: bytes) -> bytes:
        """8 kHz speech (the recordings' rate) at the line's rate."""
        if self.rate == 8000:
            return pcm
        return pcm16(soxr.resample(samples(pcm), 8000, self.rate))

    def messages(self, pcm: bytes) -> list[Message]:
        """Inbound media, one message per 20 ms frame, as the carrier sends them."""
        if self.name == "vonage":
            size = self.rate // 50 * 2
            return [pcm[k : k + size] for k in range(0, len(pcm) - size + 1, size)]
        ulaw = pcm_to_ulaw(pcm)
        starts = range(0, len(ulaw) - 159, 160)
        return [wire.media(i + 2, IDS, i + 1, i * 20, ulaw[k : k + 160]) for i, k in enumerate(starts)]

    def played(self, frame: bytes) -> np.ndarray:
        """What the phone plays of one of the core's frames: µ-law's rounding on Twilio."""
        return samples(ulaw_to_pcm(pcm_to_ulaw(frame)) if self.name == "twilio" else frame)

    def quiet(self, seconds: float) -> bytes:
        """A quiet line (about -60 dBFS), so no frame is digital silence."""
        return bytes([2, 0, 254, 255]) * int(self.rate * seconds / 2)


class _Line:
    """One call fed frame by frame: the codec in, the core, the codec out; and, when the agent
    talks, the carrier's playback and the echo of what it played, 100 ms later and ``echo_gain``
    as loud (0.1: 20 dB down; 0: no echo, the quiet line alone)."""

    ECHO_FRAMES = 5

    def __init__(self, carrier: _Carrier, agent_pcm: bytes | None, echo_gain: float = 0.1) -> None:
        self.carrier = carrier
        self.echo_gain = echo_gain
        self.codec = carrier.codec()
        self.call = Call(call_settings_for(CallSettings(), self.codec))
        self.quiet = samples(carrier.quiet(FRAME_S))
        self.now = 0.0
        self.played: dict[int, bytes] = {}  # playback slot (20 ms) -> the frame the phone plays then
        self.play_end = 0
        self.sent: list[Message] = []  # the caller's messages, as made
        self._feed(CallStarted(0.0, "MZbench", "CA"))
        self._feed(TtsConnected(0.0))
        if agent_pcm is not None:  # one long reply: the agent talks for the whole run
            context = self._feed(AgentText(0.0, 0, "Sure, let me read that for you. "))
            self._feed(AgentDone(0.0, 0))
            if context is not None:
                self._feed(TtsAudio(0.0, context, agent_pcm))

    def _feed(self, event: Event) -> str | None:
        opened = None
        actions = self.call.handle(event)
        for action in actions:
            if isinstance(action, PHONE_ACTIONS):
                frames(self.codec.encode(action))
        self.call.next_deadline()
        for action in actions:
            if isinstance(action, OpenContext):
                opened = action.context_id
            elif isinstance(action, SendMedia):  # one or more 20 ms frames (`playback.message_ms`)
                size = self.carrier.rate // 50 * 2
                for k in range(0, len(action.pcm), size):
                    slot = max(self.play_end, round(self.now / FRAME_S))
                    self.played[slot] = action.pcm[k : k + size]
                    self.play_end = slot + 1
            elif isinstance(action, ClearPlayback):
                self.play_end = round(self.now / FRAME_S)
                self.played = {k: v for k, v in self.played.items() if k < self.play_end}
        return opened

    def frame(self, message: Message | None, i: int) -> None:
        self.now = (i + 1) * FRAME_S
        if message is None:  # the line carries the echo of what played
            echo = self.played.pop(i - self.ECHO_FRAMES, None)
            echo_pcm = self.carrier.played(echo) * self.echo_gain if echo and self.echo_gain else 0.0
            message = self.carrier.messages(pcm16(echo_pcm + self.quiet))[0]
        self.sent.append(message)
        for event in self.codec.decode(message, self.now):
            self._feed(event)


Condition = tuple[list[Message | None], bytes | None, float]  # messages (None: the echo), the agent's audio, echo gain


def _conditions(carrier: _Carrier) -> dict[str, Condition]:
    speech = b"".join(load_wav(name) for name in ("caller_01.wav", "caller_02.wav", "caller_03.wav"))
    agent = carrier.at_rate(load_wav("caller_05.wav") + load_wav("caller_06.wav") + load_wav("caller_08.wav")) * 20
    return {
        "caller silent, agent silent": ([*carrier.messages(carrier.quiet(10))], None, 0.0),
        "caller talking, agent silent": ([*carrier.messages(carrier.at_rate(speech))], None, 0.0),
        "agent talking, no echo": ([None], agent, 0.0),
        "agent talking, its echo 20 dB down": ([None], agent, 0.1),
    }


def per_frame_us(messages: list[Message | None], agent: bytes | None, frames: int = 5000,
                 carrier: str = "twilio", echo_gain: float = 0.1) -> float:
    """Microseconds of CPU per frame over ``frames`` frames of one call."""
    first = _Line(_Carrier(carrier), agent, echo_gain)
    for i in range(frames):
        first.frame(messages[i % len(messages)], i)
    assert agent is None or first.call.snapshot.barge_ins == 0, "the echo must not interrupt the agent"
    line = _Line(_Carrier(carrier), agent, echo_gain)
    t0 = time.process_time()
    for i, message in enumerate(first.sent):
        line.frame(message, i)
    return (time.process_time() - t0) / frames * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frame", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--profile", action="store_true", help="print the costliest functions of each condition")
    p.add_argument("--carrier", choices=CARRIERS, default="twilio",
                   help="the line: Twilio's 8 kHz µ-law JSON, or Vonage's 16 kHz binary PCM (a wideband call)")
    a = p.parse_args(argv)
    print("| line | µs per 20 ms frame (median) | CPU s per call-minute |\n|---|---:|---:|")
    for name, (messages, agent, gain) in _conditions(_Carrier(a.carrier)).items():
        us = statistics.median(per_frame_us(messages, agent, a.frames, a.carrier, gain) for _ in range(a.repeat))
        print(f"| {name} | {us:.1f} | {us * 3000 / 1e6:.3f} |")
        if a.profile:
            _profile(lambda m=messages, g=agent, e=gain: per_frame_us(m, g, a.frames, a.carrier, e))
    return 0


def _profile(run: Callable[[], float]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    raise SystemExit(main())
