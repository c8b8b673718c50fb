"""``bridge dial +15551234567``: place an outbound call through Twilio; the answered call runs the agent.

Credentials come from ``.env`` or the environment (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``,
``TWILIO_FROM_NUMBER``), and ``PUBLIC_URL`` names the running bridge whose voice webhook Twilio
fetches when the call is answered. ``--detect-machine`` asks for answering-machine detection: a
machine then gets the voicemail message once, after the beep, and the call ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bridge.carriers.twilio.rest import TwilioRest, TwilioRestError
from bridge.carriers.twilio.twiml import VOICE_PATH
from bridge.server.call_control import AMD_PATH
from bridge.tools.serving import load_or_exit

__all__ = ["add_arguments", "run_from_args"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("to", help="the number to call, E.164 (e.g. +15551234567)")
    p.add_argument("--from", dest="from_", help="caller ID, E.164 (default: TWILIO_FROM_NUMBER)")
    p.add_argument("--detect-machine", action="store_true", help="answering-machine detection: leave voicemail")


def run_from_args(args: argparse.Namespace) -> int:
    settings = load_or_exit()
    server = settings.server
    missing = [name for name, value in (("TWILIO_ACCOUNT_SID", server.twilio_account_sid),
                                        ("TWILIO_AUTH_TOKEN", server.twilio_auth_token),
                                        ("PUBLIC_URL", server.public_url)) if not value]
    from_ = args.from_ or server.twilio_from_number
    if not from_:
        missing.append("TWILIO_FROM_NUMBER (or --from)")
    if missing:
        print(f"bridge dial: set {', '.join(missing)} (in .env or the environment)", file=sys.stderr)
        return 2
    assert server.twilio_account_sid and server.twilio_auth_token and server.public_url and from_
    rest = TwilioRest(server.twilio_account_sid, server.twilio_auth_token, base_url=server.twilio_api_base_url)
    webhook = server.public_url.rstrip("/") + VOICE_PATH
    try:
        amd = server.public_url.rstrip("/") + AMD_PATH  # the late verdict switches a live call to voicemail
        placed = asyncio.run(rest.place_call(args.to, from_, webhook, detect_machine=args.detect_machine,
                                             amd_callback=amd if args.detect_machine else None))
    except ValueError as exc:
        print(f"bridge dial: {exc}", file=sys.stderr)
        return 2
    except TwilioRestError as exc:
        print(f"bridge dial: {exc}", file=sys.stderr)
        return 1
    print(f"calling {placed.to}: call {placed.sid} ({placed.status}); when answered Twilio fetches {webhook}")
    return 0
