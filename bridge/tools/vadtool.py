"""``bridge vad RECORDING.wav``: what the live path would make of a recording, for tuning.

It runs the very `bridge.core.bargein.Listener` the core runs (webrtcvad, noise floor, tone and echo
gates, hysteresis, confirmation), configured from the same settings (``config/bridge.toml``,
``BRIDGE_VAD_*``, ``BRIDGE_BARGE_IN_*``, ``BRIDGE_ECHO_*``), over any WAV resampled to the phone's
8 kHz with libsoxr and fed in 20 ms frames as Twilio sends them. ``--agent AGENT.wav`` is what the
agent was playing during the recording, from its first sample (the echo guard's reference); the
caller's audio then "barges in" wherever the core would pause the agent. The recording is
fixed, so a pause does not silence the agent in it: the tool reports what the core would do and
carries on, as the core does after a resume.

It prints the speech segments and barge-in decisions, and with ``--plot out.png`` draws the
waveform, the frame levels against the noise floor and echo thresholds, and each frame's
verdict (matplotlib, the ``plot`` extra, imported only then).
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

from bridge.core.bargein import BargeInConfig
from bridge.core.echo import EchoConfig
from bridge.core.vad import VadConfig
from bridge.tools.vad_analysis import Analysis, analyse, read_wav

__all__ = ["add_arguments", "report", "run_from_args"]


def report(name: str, analysis: Analysis, vad: VadConfig, barge_in: BargeInConfig, echo: EchoConfig) -> list[str]:
    guard = "off" if not echo.enabled else f"on, max delay {echo.max_delay_ms} ms, margin {echo.margin_db:g} dB"
    lines = [
        f"{name}: {analysis.duration:.2f} s at 8 kHz",
        f"detector: webrtcvad mode {vad.aggressiveness}, start {vad.start_ms} ms, end {vad.end_ms} ms, "
        f"noise floor +{vad.snr_db:g} dB, tones {'rejected' if vad.reject_tones else 'allowed'}; "
        f"confirm {barge_in.confirm_ms} ms, gap {barge_in.gap_ms} ms; echo guard {guard}",
    ]
    lines += [s.describe() for s in analysis.segments] or ["no speech"]
    barge = [s for s in analysis.segments if s.over_agent]
    if analysis.agent is not None:
        stops = sum(1 for s in barge if s.confirmed is not None)
        lines.append(f"barge-ins: {len(barge)} pauses, {stops} interruptions, {len(barge) - stops} resumed")
        erl = f"{analysis.erl_db:.1f} dB" if analysis.erl_db is not None else "not learnt (assumed "
        lines.append(f"echo loss: {erl}" + ("" if analysis.erl_db is not None else f"{echo.assumed_erl_db:g} dB)"))
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", type=Path, help="a WAV of the caller's line (any rate; resampled to 8 kHz)")
    p.add_argument("--agent", type=Path, help="a WAV of what the agent played meanwhile, from the same start")
    p.add_argument("--plot", type=Path, help="write a PNG: waveform, levels and thresholds, each frame's verdict")


def run_from_args(args: argparse.Namespace) -> int:
    from bridge.config import ConfigError, load_settings
    from bridge.server.factories import call_settings

    try:
        settings = call_settings(load_settings())
    except ConfigError as exc:
        print(f"bridge vad: {exc}", file=sys.stderr)
        return 2
    try:
        line = read_wav(args.recording)
        agent = read_wav(args.agent) if args.agent else None
    except (OSError, wave.Error, EOFError, KeyError, ValueError) as exc:
        print(f"bridge vad: cannot read a PCM WAV: {exc}", file=sys.stderr)
        return 2
    analysis = analyse(line, agent, settings.vad, settings.barge_in, settings.echo)
    print("\n".join(report(args.recording.name, analysis, settings.vad, settings.barge_in, settings.echo)))
    if args.plot:
        try:
            from bridge.tools.vadplot import plot
        except ImportError:
            print("bridge vad: --plot needs matplotlib: pip install 'bridge[plot]'", file=sys.stderr)
            return 2
        plot(analysis, args.plot, title=args.recording.name, snr_db=settings.vad.snr_db)
        print(f"plot: {args.plot}")
    return 0
