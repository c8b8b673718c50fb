"""CPU per 20 ms frame of the bridge's own code, in one process, without sockets.

    python -m bench.frame            # three line conditions, medians of 5 repeats
    python -m bench.frame --profile  # and the functions that cost the most (cProfile)

The load benchmark (`bench.load`) measures the whole server, sockets and event loop included,
on a shared machine. This one isolates the per-frame work a call adds on top of them, which is
what a change to the codec or the core can move: a Twilio media message is decoded, the core
handles it (VAD, noise and echo gates, pacing, timers), and every phone action it returns is
encoded, exactly as `bridge.server.session` does, but fed from memory with simulated time. Being
deterministic and free of I/O, its figures move by a few per cent between runs, not tens. The
line is made in a first pass (the echo depends on what the core played); a second, fresh call is
timed on the recorded messages, in CPU time, so other processes on the machine do not count.

Conditions: the caller silent on a quiet line; the caller talking (real speech from
``tests/audio``) while the agent is silent; the agent talking with its echo 20 dB down on the
line (the echo guard's busiest case), 2 s of TTS audio arriving every 2 s.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

from bridge.carriers.twilio.codec import TwilioCodec
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


def _messages(pcm: bytes) -> list[str]:
    """Twilio inbound media messages, one per 20 ms frame, as Twilio formats them."""
    ulaw = pcm_to_ulaw(pcm)
    starts = range(0, len(ulaw) - 159, 160)
    return [wire.media(i + 2, IDS, i + 1, i * 20, ulaw[k : k + 160]) for i, k in enumerate(starts)]


def _quiet(seconds: float) -> bytes:
    """A quiet line (about -60 dBFS), so no frame is digital silence."""
    return bytes([2, 0, 254, 255]) * int(8000 * seconds / 2)


QUIET_FRAME = _quiet(FRAME_S)


class _Line:
    """One call fed frame by frame: the codec in, the core, the codec out; and, when the agent
    talks, Twilio's playback and the echo of what it played, 100 ms later and 20 dB down."""

    ECHO_FRAMES = 5
    ECHO_GAIN = 0.1

    def __init__(self, agent_pcm: bytes | None) -> None:
        self.codec = TwilioCodec()
        self.codec.decode('{"event":"start","streamSid":"MZbench","start":{"streamSid":"MZbench","callSid":"CA"}}',
                          0.0)
        self.call = Call(CallSettings())
        self.now = 0.0
        self.played: dict[int, bytes] = {}  # playback slot (20 ms) -> the mu-law frame Twilio plays then
        self.play_end = 0
        self.sent: list[str] = []  # the caller's messages, as made
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
                self.codec.encode(action)
        self.call.next_deadline()
        for action in actions:
            if isinstance(action, OpenContext):
                opened = action.context_id
            elif isinstance(action, SendMedia):
                ulaw = pcm_to_ulaw(action.pcm)  # as Twilio carries it
                for k in range(0, len(ulaw), 160):
                    slot = max(self.play_end, round(self.now / FRAME_S))
                    self.played[slot] = ulaw[k : k + 160]
                    self.play_end = slot + 1
            elif isinstance(action, ClearPlayback):
                self.play_end = round(self.now / FRAME_S)
                self.played = {k: v for k, v in self.played.items() if k < self.play_end}
        return opened

    def frame(self, message: str | None, i: int) -> None:
        self.now = (i + 1) * FRAME_S
        if message is None:  # the line carries the echo of what played
            echo = self.played.pop(i - self.ECHO_FRAMES, None)
            echo_pcm = samples(ulaw_to_pcm(echo)) * self.ECHO_GAIN if echo else 0.0
            line = pcm16(echo_pcm + samples(QUIET_FRAME))
            message = _messages(line)[0]
        self.sent.append(message)
        for event in self.codec.decode(message, self.now):
            self._feed(event)


def _conditions() -> dict[str, tuple[list[str | None], bytes | None]]:
    speech = b"".join(load_wav(name) for name in ("caller_01.wav", "caller_02.wav", "caller_03.wav"))
    agent = load_wav("caller_05.wav") + load_wav("caller_06.wav") + load_wav("caller_08.wav")
    return {
        "caller silent, agent silent": ([*_messages(_quiet(10))], None),
        "caller talking, agent silent": ([*_messages(speech)], None),
        "agent talking, its echo 20 dB down": ([None], agent * 20),
    }


def per_frame_us(messages: list[str | None], agent: bytes | None, frames: int = 5000) -> float:
    """Microseconds of CPU per frame over ``frames`` frames of one call."""
    first = _Line(agent)
    for i in range(frames):
        first.frame(messages[i % len(messages)], i)
    assert agent is None or first.call.snapshot.barge_ins == 0, "the echo must not interrupt the agent"
    line = _Line(agent)
    t0 = time.process_time()
    for i, message in enumerate(first.sent):
        line.frame(message, i)
    return (time.process_time() - t0) / frames * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.frame", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--profile", action="store_true", help="print the costliest functions of each condition")
    a = p.parse_args(argv)
    print("| line | µs per 20 ms frame (median) | CPU s per call-minute |\n|---|---:|---:|")
    for name, (messages, agent) in _conditions().items():
        us = statistics.median(per_frame_us(messages, agent, a.frames) for _ in range(a.repeat))
        print(f"| {name} | {us:.1f} | {us * 3000 / 1e6:.3f} |")
        if a.profile:
            _profile(lambda m=messages, g=agent: per_frame_us(m, g, a.frames))
    return 0


def _profile(run: Callable[[], float]) -> None:
    profiler = cProfile.Profile()
    profiler.runcall(run)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    raise SystemExit(main())
