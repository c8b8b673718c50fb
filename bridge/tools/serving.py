"""Serving on a bound socket, and what to tell the person who started it.

Shared by ``bridge serve`` and ``bridge tunnel``, so neither command imports the other.
"""

from __future__ import annotations

import contextlib
import socket
import sys

from bridge.config import ConfigError, Settings, load_settings

__all__ = ["banner", "bind", "load_or_exit", "local_url", "run_server", "webhook_url"]


def load_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def webhook_url(settings: Settings, host: str, port: int) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/") + "/twilio/voice"
    return f"{local_url(host, port)}/twilio/voice"


def local_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _voice(settings: Settings) -> str:
    """Which voice calls will get, and whether it can actually speak here."""
    from bridge.server import factories

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
    local, agent = local_url(host, port), settings.agent
    lines = [
        f"bridge listening on {local}",
        f"  voice: {_voice(settings)}",
        f"  agent: {agent.kind}" + (f" ({agent.script})" if agent.kind == "scripted" else ""),
        f"  Twilio voice webhook (POST): {webhook_url(settings, host, port)}",
        f"  try it: `bridge call {local}` (or `make call`) in another terminal",
    ]
    if not settings.server.public_url:
        lines.append("  for a real phone: `bridge tunnel`, or set PUBLIC_URL to this server's public https URL")
    if settings.server.record_calls:
        from bridge.server.records import admin_token

        if settings.server.admin_token:  # the person who set it knows it; it stays out of any log
            lines.append(f"  call records: {local}/calls?token=<BRIDGE_ADMIN_TOKEN>")
        else:  # made now, and shown only here, like Jupyter's link; the app takes the same token
            lines.append(f"  call records: {local}/calls?token={admin_token(None)}")
    return lines


def run_server(settings: Settings, sock: socket.socket) -> int:
    """Serve on an already bound socket until Ctrl-C (or SIGTERM); live calls are drained."""
    import uvicorn

    from bridge.server.app import WS_MAX_SIZE, create_app
    from bridge.server.wsframes import FrameProtocol

    config = uvicorn.Config(create_app(settings), log_level="warning", ws=FrameProtocol, ws_max_size=WS_MAX_SIZE)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shuts down gracefully, then re-raises Ctrl-C
        uvicorn.Server(config).run(sockets=[sock])
    return 0
