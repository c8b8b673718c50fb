"""The ``bridge`` command: run the server, and tools for the people who run it.

``bridge serve`` runs the bridge; ``bridge call`` dials a running bridge the way Twilio does
and reports what a caller would hear; ``bridge tunnel`` puts a local bridge on the internet
through ngrok. Each prints what a person needs next, e.g. the webhook URL for the Twilio console.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
from collections.abc import Sequence

from bridge.config import ConfigError, Settings, load_settings

__all__ = ["banner", "bind", "main", "run_server"]


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _webhook_url(settings: Settings, host: str, port: int) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/") + "/twilio/voice"
    return f"{_local_url(host, port)}/twilio/voice"


def _local_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _voice(settings: Settings) -> str:
    """Which voice calls will get, and whether it can actually speak here."""
    from bridge import factories

    if factories.tts_engine(settings) == "elevenlabs":
        el = settings.elevenlabs
        return f"ElevenLabs (voice {el.voice_id}, model {el.model_id})"
    from bridge.tts import espeak

    try:
        espeak.find_library()
    except espeak.EspeakUnavailable as exc:
        return f"offline espeak-ng, NOT INSTALLED: calls will fail ({exc})"
    return "offline espeak-ng (set ELEVENLABS_API_KEY for ElevenLabs)"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is printed, so "listening" is true when shown
    and a port in use is one clear line (exit 1) rather than a server log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        print(f"bridge: cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port",
              file=sys.stderr)
        raise SystemExit(1) from None


def banner(settings: Settings, sock: socket.socket) -> list[str]:
    """What a person needs next: where it listens, who speaks, the webhook URL for Twilio."""
    host, port = sock.getsockname()[:2]
    local, agent = _local_url(host, port), settings.agent
    lines = [
        f"bridge listening on {local}",
        f"  voice: {_voice(settings)}",
        f"  agent: {agent.kind}" + (f" ({agent.script})" if agent.kind == "scripted" else ""),
        f"  Twilio voice webhook (POST): {_webhook_url(settings, host, port)}",
        f"  try it: `bridge call {local}` (or `make call`) in another terminal",
    ]
    if not settings.server.public_url:
        lines.append("  for a real phone: `bridge tunnel`, or set PUBLIC_URL to this server's public https URL")
    return lines


def run_server(settings: Settings, sock: socket.socket) -> int:
    """Serve on an already bound socket until Ctrl-C (or SIGTERM); live calls are drained."""
    import uvicorn

    from bridge.app import WS_MAX_SIZE, create_app

    config = uvicorn.Config(create_app(settings), log_level="warning", ws_max_size=WS_MAX_SIZE)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shuts down gracefully, then re-raises Ctrl-C
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def serve(args: argparse.Namespace) -> int:
    settings = _settings()
    sock = bind(args.host, args.port)
    print("\n".join(banner(settings, sock)), flush=True)
    return run_server(settings, sock)


def call(args: argparse.Namespace) -> int:
    from bridge.simulator.cli import run_from_args

    return run_from_args(args)


def tunnel(args: argparse.Namespace) -> int:
    from bridge.tunnel import run_tunnel

    return run_tunnel(args)


def vad(args: argparse.Namespace) -> int:
    from bridge.vadtool import run_from_args

    return run_from_args(args)


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")


def _parser() -> argparse.ArgumentParser:
    from bridge.simulator.cli import add_arguments as call_options
    from bridge.vadtool import add_arguments as vad_options

    parser = argparse.ArgumentParser(prog="bridge", description="Put a voice agent on the phone.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the bridge server")
    _server_options(p)
    p.set_defaults(func=serve)

    p = sub.add_parser("call", help="dial a running bridge like Twilio does and report what the caller heard")
    call_options(p)
    p.set_defaults(func=call)

    p = sub.add_parser("tunnel", help="serve, reachable from the internet through an ngrok tunnel")
    _server_options(p)
    p.set_defaults(func=tunnel)

    p = sub.add_parser("vad", help="run the live speech detector over a recording: segments, barge-ins, a plot")
    vad_options(p)
    p.set_defaults(func=vad)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
