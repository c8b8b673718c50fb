"""`bridge tunnel`: the bridge, reachable by a carrier through an ngrok tunnel, in one command.

ngrok's Python SDK carries its agent inside the wheel, so no separate download or process is
needed; it is the optional extra ``bridge[tunnel]`` and is imported only here. The tunnel's
https URL becomes ``PUBLIC_URL`` for this run, so the TwiML names a ``wss://`` stream Twilio can
reach and signatures are checked against the URL Twilio signed.

Every way this can fail (no SDK, no token, no network, a refused token) ends in one sentence on
stderr and exit code 2, never a traceback, and the token never appears in it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from dotenv import dotenv_values

from bridge.config import ConfigError, Settings, load_settings
from bridge.tools.serving import banner, bind, run_server

__all__ = ["TOKEN_ENV", "TunnelError", "console_steps", "find_token", "import_ngrok", "public_url", "run_tunnel"]

TOKEN_ENV = "NGROK_AUTHTOKEN"
TOKEN_PAGE = "https://dashboard.ngrok.com/get-started/your-authtoken"


class TunnelError(Exception):
    """The tunnel cannot be opened; the message is one sentence with no secret in it."""


def find_token(environ: dict[str, str] | None = None, dotenv: Path | None = Path(".env")) -> str | None:
    """NGROK_AUTHTOKEN from the environment, else from ``.env`` (where the other secrets live)."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV) or (dotenv_values(dotenv).get(TOKEN_ENV) if dotenv else None)
    return token.strip() or None if token else None


def import_ngrok() -> ModuleType:
    """The ngrok SDK, imported only when a tunnel is wanted: most users never need it."""
    try:
        import ngrok
    except ImportError:
        raise TunnelError("the ngrok SDK is not installed: pip install 'bridge[tunnel]' "
                          "(or pip install ngrok)") from None
    return ngrok


def public_url(raw: object) -> str:
    """The tunnel's https://host, checked: it becomes PUBLIC_URL and so the TwiML's stream URL."""
    url = str(raw).strip().rstrip("/")
    if not url.startswith("https://") or "/" in url[len("https://"):] or len(url) <= len("https://"):
        raise TunnelError(f"ngrok gave an unexpected URL {url[:80]!r}; expected https://host")
    return url


_STEPS: dict[str, tuple[str, ...]] = {
    "twilio": ("In the Twilio console (console.twilio.com):",
               "  1. Phone Numbers > Manage > Active numbers, and pick your number",
               "  2. Voice Configuration > \"A call comes in\": Webhook, {url}/twilio/voice, HTTP POST"),
    "signalwire": ("In your SignalWire space (<space>.signalwire.com):",
                   "  1. Phone Numbers, pick your number, Edit Settings",
                   "  2. Handle calls using: a LaML/cXML webhook, {url}/signalwire/voice, POST"),
    "telnyx": ("In the Telnyx portal (portal.telnyx.com):",
               "  1. Voice > Programmable Voice > TeXML Applications: create one",
               "  2. Voice Method POST, Webhook URL {url}/telnyx/voice; assign your number to it"),
    "plivo": ("In the Plivo console (console.plivo.com):",
              "  1. Voice > XML Applications: add one, Answer URL {url}/plivo/voice, method POST",
              "  2. Phone Numbers > Your Numbers: pick the number, Application Type XML, that application"),
    "vonage": ("In the Vonage dashboard (dashboard.nexmo.com):",
               "  1. Applications: create one with Voice: Answer URL {url}/vonage/answer (GET),",
               "     Event URL {url}/vonage/events (POST); link your number to it"),
    "exotel": ("In Exotel's App Bazaar (my.exotel.com):",
               "  1. Create a flow with a Voicebot applet; its URL: {url}/exotel/voice",
               "  2. Assign the flow to your ExoPhone"),
}


def console_steps(url: str, carrier: str = "twilio") -> list[str]:
    """What to click in the carrier's console so that calls to the number reach this bridge."""
    return [line.format(url=url) for line in _STEPS[carrier]] + [
        "  Save, then call the number. Ctrl-C here closes the tunnel and stops the bridge.",
        "The tunnel's URL changes on every run unless your ngrok plan gives you a fixed domain.",
        "Other carriers: docs/carriers.md (set [carriers] default, or BRIDGE_CARRIER, to see theirs here).",
    ]


def _open(ngrok: ModuleType, port: int, token: str) -> tuple[Any, str]:
    """Forward a public https URL to the local port; the listener and its URL."""
    try:
        listener = ngrok.forward(f"127.0.0.1:{port}", authtoken=token)
        return listener, public_url(listener.url())
    except TunnelError:
        raise
    except Exception as exc:  # the SDK raises ValueError with (what, why) args; keep the words only
        words = "; ".join(str(a) for a in getattr(exc, "args", ()) if str(a)) or type(exc).__name__
        words = words.replace(token, "[token]")
        raise TunnelError(f"ngrok could not open a tunnel ({words}): check the network and {TOKEN_ENV}") from None


def _hard_exit(code: int) -> None:
    """Leave without interpreter shutdown. Why: once the SDK's native runtime has started, the
    process can crash while Python finalises (seen with ngrok 1.4 on Linux, after a failed
    session), which would turn a clean failure or a clean Ctrl-C into a core dump."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_tunnel(args: argparse.Namespace) -> int:
    """`bridge tunnel`: settings checked, port bound, tunnel opened, URLs printed, then serve."""
    try:
        settings: Settings = load_settings()
        ngrok = import_ngrok()
        token = find_token()
        if token is None:
            raise TunnelError(f"set {TOKEN_ENV} (in the environment or .env) to your ngrok authtoken "
                              f"from {TOKEN_PAGE}")
    except (ConfigError, TunnelError) as exc:
        print(f"bridge tunnel: {exc}", file=sys.stderr)
        return 2
    sock = bind(args.host, args.port)
    code = 2
    try:
        listener, url = _open(ngrok, sock.getsockname()[1], token)
        os.environ["PUBLIC_URL"] = url  # for anything else in this process that reads it
        settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, public_url=url))
        print(f"ngrok tunnel {url} -> {sock.getsockname()[0]}:{sock.getsockname()[1]}")
        print("\n".join(banner(settings, sock) + console_steps(url, settings.carriers.default)), flush=True)
        code = run_server(settings, sock)
        with contextlib.suppress(Exception):  # the process ends next anyway; this is only politeness
            ngrok.disconnect(listener.url())
    except TunnelError as exc:
        print(f"bridge tunnel: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        code = 0
    except SystemExit as exc:  # the server could not start; it has said why
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # still one line, without the token, and the process must still end below
        print(f"bridge tunnel: stopped: {type(exc).__name__}: {str(exc).replace(token, '[token]')}", file=sys.stderr)
    _hard_exit(code)
    return code
