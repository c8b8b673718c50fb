"""Command line: ``python -m bridge.testing.fake_elevenlabs --port 9000 --api-key test`` serves until Ctrl-C.

For trying a bridge by hand without a key, and for the load benchmark, which runs the fake in its
own process so that its work does not slow the bridge it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

from bridge.testing.fake_elevenlabs.server import FakeElevenLabs

__all__ = ["main"]


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.testing.fake_elevenlabs",
        description="Serve a fake ElevenLabs multi-context TTS WebSocket until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--api-key", default="test", help="expected xi-api-key; '' accepts any")
    parser.add_argument("--ttfb", type=float, default=0.08)
    parser.add_argument("--realtime-factor", type=float, default=4.0, help="0 = no pacing")
    parser.add_argument("--ms-per-char", type=float, default=55.0)
    parser.add_argument("--casing", choices=("camel", "snake"), default="camel")
    parser.add_argument("--close-race-ms", type=float, default=0.0)
    parser.add_argument("--timeout-scale", type=float, default=1.0)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeElevenLabs(
        api_key=args.api_key or None,
        host=args.host,
        port=args.port,
        ttfb=args.ttfb,
        realtime_factor=args.realtime_factor or None,
        ms_per_char=args.ms_per_char,
        casing=args.casing,
        close_race_ms=args.close_race_ms,
        timeout_scale=args.timeout_scale,
    )
    async with fake:
        print(f"fake ElevenLabs listening on {fake.base_url}", flush=True)
        await asyncio.Future()


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0

