"""The ``bridge`` command: run the server, and tools for the people who run it.

``bridge serve`` runs the bridge; ``bridge call`` dials a running bridge the way Twilio does
and reports what a caller would hear; ``bridge tunnel`` puts a local bridge on the internet
through ngrok. Each prints what a person needs next, e.g. the webhook URL for the Twilio console.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge.config import ConfigError, Settings, load_settings

__all__ = ["main"]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _webhook_url(settings: Settings, host: str, port: int) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/") + "/twilio/voice"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/twilio/voice"


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bridge import factories
    from bridge.app import WS_MAX_SIZE, create_app

    settings = _settings()
    app = create_app(settings)
    print(f"bridge listening on http://{args.host}:{args.port}")
    print(f"  voice: {factories.tts_engine(settings)}; agent: {settings.agent.kind}")
    print(f"  Twilio voice webhook (POST): {_webhook_url(settings, args.host, args.port)}")
    if not settings.server.public_url:
        print("  (for a real phone, expose this with `bridge tunnel` or set PUBLIC_URL)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws_max_size=WS_MAX_SIZE)
    return 0


def call(args: argparse.Namespace) -> int:
    from bridge.simulator.cli import run_from_args

    return run_from_args(args)


def tunnel(args: argparse.Namespace) -> int:
    from bridge.tunnel import run_tunnel

    return run_tunnel(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="Put a voice agent on the phone.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the bridge server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
