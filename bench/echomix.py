"""A caller's line with the agent's echo on it, to try ``bridge vad --agent`` without a real call.

    python -m bench.echomix AGENT.wav [AGENT.wav ...] --echo-db -20 --delay-ms 120 \\
        --caller tests/audio/caller_02.wav@2.5 --out line.wav --agent-out agent.wav

The line is what the bridge would receive: the agent's audio (the ``AGENT.wav`` files one after
another, 0.25 s apart, as the bridge played them; written to ``--agent-out``) ``--delay-ms``
later and ``--echo-db`` quieter, plus each ``--caller FILE@SECONDS`` starting at
that time, plus optional white noise (``--noise-dbfs``), mu-law coded like Twilio's inbound
stream. Pass the agent's audio to ``bridge vad --agent`` as the echo guard's reference.
``--agent-until SECONDS`` cuts the agent off there, as a barge-in would on a real call (a recording
of a call holds no echo after the agent was stopped).
Any PCM WAV is read (resampled to 8 kHz, mixed down); the output is 8 kHz mono 16-bit.
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import numpy as np

from bridge.core.audio import pcm_to_ulaw, ulaw_to_pcm
from bridge.tools.vad_analysis import RATE, read_wav

__all__ = ["main", "mix"]


def mix(agent: np.ndarray, callers: list[tuple[np.ndarray, float]], echo_db: float, delay_ms: float,
        noise_dbfs: float | None = None, seed: int = 1) -> np.ndarray:
    """The line as int16: the delayed, attenuated agent, the callers, the noise; mu-law coded."""
    shift = round(delay_ms / 1000 * RATE)
    ends = [shift + len(agent)] + [round(at * RATE) + len(pcm) for pcm, at in callers]
    line = np.zeros(max(ends) + RATE // 2)
    line[shift : shift + len(agent)] += agent * 10 ** (echo_db / 20)
    for pcm, at in callers:
        start = round(at * RATE)
        line[start : start + len(pcm)] += pcm
    if noise_dbfs is not None:
        line += np.random.default_rng(seed).standard_normal(len(line)) * 32768 * 10 ** (noise_dbfs / 20)
    pcm16 = np.clip(np.round(line), -32768, 32767).astype("<i2").tobytes()
    out: np.ndarray = np.frombuffer(ulaw_to_pcm(pcm_to_ulaw(pcm16)), dtype="<i2")
    return out


def _caller(spec: str) -> tuple[np.ndarray, float]:
    path, _, at = spec.rpartition("@")
    if not path:
        raise argparse.ArgumentTypeError(f"expected FILE@SECONDS, got {spec!r}")
    return read_wav(Path(path)).astype(np.float64), float(at)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.echomix", description=__doc__.splitlines()[0])
    p.add_argument("agent", type=Path, nargs="+", help="what the agent played from the line's first sample")
    p.add_argument("--caller", type=_caller, action="append", default=[], metavar="FILE@SECONDS",
                   help="the caller's speech and when it starts (repeatable)")
    p.add_argument("--echo-db", type=float, default=-20.0, help="echo level relative to the agent (default -20)")
    p.add_argument("--delay-ms", type=float, default=120.0, help="echo delay (default 120)")
    p.add_argument("--noise-dbfs", type=float, help="add white line noise at this RMS level")
    p.add_argument("--out", type=Path, required=True, help="the line's WAV to write")
    p.add_argument("--agent-until", type=float, metavar="SECONDS", help="the agent stops here (a barge-in)")
    p.add_argument("--agent-out", type=Path, help="also write the agent's audio (the files joined) here")
    a = p.parse_args(argv)
    gap = np.zeros(RATE // 4, np.int16)
    agent = np.concatenate([part for path in a.agent for part in (read_wav(path), gap)][:-1])
    if a.agent_until is not None:
        agent = agent[: max(0, round(a.agent_until * RATE))]
    line = mix(agent.astype(np.float64), a.caller, a.echo_db, a.delay_ms, a.noise_dbfs)
    for path, pcm in ((a.out, line), (a.agent_out, agent)):
        if path is not None:
            _write(path, pcm)
            print(f"written: {path} ({len(pcm) / RATE:.2f} s)")
    return 0


def _write(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


if __name__ == "__main__":
    raise SystemExit(main())
