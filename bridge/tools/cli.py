"""The ``bridge`` command: run the server, and tools for the people who run it.

``bridge serve`` runs the bridge; ``bridge call`` dials a running bridge the way Twilio does
and reports what a caller would hear; ``bridge tunnel`` puts a local bridge on the internet
through ngrok; ``bridge dial`` places an outbound call through Twilio. Each prints what a person
needs next, e.g. the webhook URL for the Twilio console.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bridge.tools.serving import banner, bind, load_or_exit, run_server

__all__ = ["main"]


def serve(args: argparse.Namespace) -> int:
    settings = load_or_exit()
    sock = bind(args.host, args.port)
    print("\n".join(banner(settings, sock)), flush=True)
    return run_server(settings, sock)


def call(args: argparse.Namespace) -> int:
    from bridge.tools.simulator.cli import run_from_args

    return run_from_args(args)


def tunnel(args: argparse.Namespace) -> int:
    from bridge.tools.tunnel import run_tunnel

    return run_tunnel(args)


def dial(args: argparse.Namespace) -> int:
    from bridge.tools.dial import run_from_args

    return run_from_args(args)


def vad(args: argparse.Namespace) -> int:
    from bridge.tools.vadtool import run_from_args

    return run_from_args(args)


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")


def _parser() -> argparse.ArgumentParser:
    from bridge.tools.dial import add_arguments as dial_options
    from bridge.tools.simulator.cli import add_arguments as call_options
    from bridge.tools.vadtool import add_arguments as vad_options

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

    p = sub.add_parser("dial", help="place an outbound call through Twilio; the answered call runs the agent")
    dial_options(p)
    p.set_defaults(func=dial)

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
