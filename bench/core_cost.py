"""The call's own CPU per call-minute, in-process and in simulated time, for two trees side by side.

    python -m bench.core_cost BEFORE_TREE AFTER_TREE [--rounds 7]
    python bench/core_cost.py --measure          # this tree alone, one JSON line

A load run (`bench.load`, `bench.ab`) measures the whole server, but on a machine shared with
other work its CPU figure swings by a third from run to run. This measures the parts of a call
that need no socket, each the least CPU time of several runs (the run least disturbed): the core
(`Call.handle` for every event of a scripted call: greeting, barge-in, reply, 6 rounds, caller
speech from tests/audio; with the shipped settings, and again with ``[aec] mode = "off"``: the
script has no echo, so the two should cost the same, the runs interleaved), the Twilio codec
encoding the core's phone actions, and a TTS decoder turning 60 s of ``pcm_16000`` chunks into
8 kHz, and the echo guard alone over 30 s of the agent talking (per minute of talking). The
trees are measured in turn, each in a fresh process, ``--rounds`` times, and the medians
printed; the transport itself (uvicorn, websockets, Starlette) is not in it.

Runs as a script inside each tree (``PYTHONPATH=TREE``), so a tree older than this file can be
measured too: it imports only ``bridge`` and ``tests.support``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _best(repeat: int, work: Any) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        work()
        best = min(best, time.process_time() - t0)
    return best


def _interleaved(repeat: int, *works: Any) -> list[float]:
    """`_best` of each of ``works``, run in turn, so that the machine's other load falls on all alike."""
    best = [float("inf")] * len(works)
    for _ in range(repeat):
        for i, work in enumerate(works):
            t0 = time.process_time()
            work()
            best[i] = min(best[i], time.process_time() - t0)
    return best


def scripted_call(cycles: int = 6) -> tuple[list[Any], float]:
    """The events of a scripted call, and its length in seconds: ``cycles`` rounds of a long
    reply, a barge-in (caller speech from tests/audio) and the next reply."""
    from bridge.core.call import Call
    from bridge.core.events import AgentDone, AgentText, CallEnded, CallStarted, TtsAudio, TtsConnected
    from tests.support import Driver, load_wav, tone

    events: list[Any] = []

    class Logged(Driver):
        def _handle(self, event: Any) -> Any:
            events.append(event)
            return super()._handle(event)

    d = Logged(Call())
    d.send(CallStarted(0.0, "MZ1", "CA1"))
    d.line_at = 0.0
    d.send(TtsConnected(0.0))
    speech, opened = load_wav("caller_02.wav"), 0
    for turn in range(cycles):
        d.send(AgentText(d.now + 0.05, turn, "Here is a long answer that the caller will not wait for. " * 3))
        d.send(AgentDone(d.now + 0.01, turn))
        contexts = [a.context_id for _, a in d.log if type(a).__name__ == "OpenContext"]
        if len(contexts) > opened:
            opened = len(contexts)
            d.send(TtsAudio(d.now + 0.1, contexts[-1], tone(440 + 40 * turn, 6.0)))
        d.advance(d.now + 3.0)
        d.caller(speech, start=d.now)
        d.advance(d.now + 1.5)
    d.send(CallEnded(d.now + 0.1, "stop"))
    return events, d.now


def _replay(events: list[Any], settings: Any = None) -> None:
    """One call handling every event of the script, in order."""
    from bridge.core.call import Call

    call = Call(settings)
    for event in events:
        call.handle(event)


def measure(cycles: int = 6, repeat: int = 5) -> dict[str, float]:
    from bridge.carriers.twilio.codec import TwilioCodec
    from bridge.core.actions import ClearPlayback, SendMark, SendMedia
    from bridge.core.audio import TtsDecoder
    from bridge.core.call import Call
    from tests.support import tone

    events, call_s = scripted_call(cycles)
    per_min = 60 / call_s

    off = _aec_off()
    core, core_off = _interleaved(2 * repeat, lambda: _replay(events), lambda: _replay(events, off))
    call = Call()
    phone = [a for event in events for a in call.handle(event) if isinstance(a, SendMedia | SendMark | ClearPlayback)]
    codec = TwilioCodec()
    start = {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    codec.decode(json.dumps(start), 0.0)
    assert codec.stream_id is not None
    encode = _best(repeat, lambda: [codec.encode(a) for a in phone])
    pcm = tone(440, 60.0, rate=16000)
    chunks = [pcm[i : i + 4800] for i in range(0, len(pcm), 4800)]  # 150 ms chunks of 16 kHz PCM

    def decode() -> None:
        decoder = TtsDecoder("pcm_16000")
        for chunk in chunks:
            decoder.decode(chunk)
        decoder.flush()

    tts = _best(repeat, decode)
    echo = _best(repeat, lambda: _echo_guard(speech_frames()))
    return {"call_s": round(call_s, 1), "media_messages": sum(isinstance(a, SendMedia) for a in phone),
            "core_ms_per_call_min": round(core * 1000 * per_min, 2),
            "core_aec_off_ms_per_call_min": round(core_off * 1000 * per_min, 2),
            "encode_ms_per_call_min": round(encode * 1000 * per_min, 2),
            "pcm16k_decode_ms_per_audio_min": round(tts * 1000, 2),
            "echo_guard_ms_per_talking_min": round(echo * 1000 * 2, 2)}


def _aec_off() -> Any:
    """The shipped call settings with the echo canceller off: the scripted call has no echo, so
    the default (``auto``) should cost what this costs."""
    import dataclasses

    from bridge.core.aec import AecConfig
    from bridge.core.call import CallSettings

    return dataclasses.replace(CallSettings(), aec=AecConfig(mode="off"))


def speech_frames() -> list[bytes]:
    from tests.support import load_wav

    speech = load_wav("caller_02.wav")
    return [speech[i : i + 320] for i in range(0, len(speech) - 320, 320)]


def _echo_guard(frames: list[bytes]) -> None:
    """30 s of the echo guard with the agent talking throughout: a refill of five frames every
    100 ms, 200 ms ahead of play, and a caller frame every 20 ms looked at and learnt from."""
    from bridge.core.echo import EchoConfig, EchoGuard

    guard, k = EchoGuard(EchoConfig()), 0
    for step in range(1500):
        now = step * 0.02
        if step % 5 == 0:
            for j in range(5):
                guard.played(frames[k % len(frames)], now + 0.1 + j * 0.02)
                k += 1
        reference, _ = _look(guard, now)
        guard.learn(-30.0, reference, frames[step % len(frames)], now)


def _look(guard: Any, now: float) -> tuple[Any, Any]:
    """A frame's reference and per-band bound, both worked out, as the gate does for a frame it
    may veto (the worst case); trees from before `EchoGuard.reference` had `look` for the pair."""
    if not hasattr(guard, "reference"):
        return guard.look(now, 0.02)
    reference = guard.reference(now, 0.02)
    return reference, (None if reference is None else guard.bound(now, 0.02))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.core_cost")
    p.add_argument("trees", type=Path, nargs="*")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--measure", action="store_true", help="measure this process's tree, print one JSON line")
    a = p.parse_args(argv)
    if a.measure or not a.trees:
        print(json.dumps(measure()))
        return 0
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in a.trees}
    for r in range(a.rounds):
        for tree in a.trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure"], env=env,
                                 cwd=tree, capture_output=True, text=True, check=True)
            runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} {tree}: {runs[tree][-1]}", file=sys.stderr, flush=True)
    for tree, figs in runs.items():
        print(tree, {k: statistics.median(f[k] for f in figs) for k in figs[0]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
