"""`bridge call`: dial a running bridge exactly as Twilio does, and say what the caller heard.

The call is placed the way a real one is: a form POST to the voice webhook (signed like Twilio's
when an auth token is given), the TwiML answer read for its ``<Stream url>`` and ``<Parameter>``s,
then the media WebSocket. Skipping any of these would hide the bugs people run this tool to find
(a wrong public URL in the TwiML, a signature the server refuses). What the caller says is a
timeline of WAV files; without one, a short demo caller is voiced offline. The result is the
timeline of the call, a summary of the numbers people tune by, and a stereo WAV to listen to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr
from dotenv import dotenv_values
from websockets.exceptions import InvalidHandshake, InvalidStatus

from bridge.carriers.twilio.signature import SIGNATURE_HEADER, compute_signature
from bridge.tools.simulator import stages, wire
from bridge.tools.simulator.audio import SAMPLE_RATE, Segment, Timeline
from bridge.tools.simulator.carriers import DIALECTS, WEBHOOKS, dialect, fetch_stream_url
from bridge.tools.simulator.phone import PhoneCall
from bridge.tools.simulator.report import CallReport

__all__ = [
    "DEFAULT_URL",
    "DEMO_LINES",
    "DialError",
    "Stream",
    "Target",
    "add_arguments",
    "demo_timeline",
    "fetch_ending",
    "media_url_from_twiml",
    "noise",
    "parse_say",
    "resolve_target",
    "run_from_args",
    "summary_lines",
]

DEFAULT_URL = "http://127.0.0.1:8000"
WEBHOOK_PATH, MEDIA_PATH = "/twilio/voice", "/twilio/media"
DEMO_LINES = ((2.0, "Sorry to interrupt. What can you do?"), (8.5, "Okay, thanks."))
"""The demo caller: a barge-in over the greeting, then another over the first reply."""
DEMO_VOICE = "en+f3"  # British, female variant: not the agent's en-us, so the two sides are easy to tell apart by ear
_TIMEOUT = 10.0


class DialError(Exception):
    """The call could not be placed; the message is one line for the person at the terminal."""


@dataclass(frozen=True)
class Target:
    """Where to dial: the webhook to POST first (None: go straight to the media socket)."""

    webhook_url: str | None
    media_url: str | None = None


@dataclass
class _Plan:
    target: Target
    timeline: Timeline
    duration: float
    out: Path
    auth_token: str | None
    ids: wire.StreamIds = field(default_factory=wire.StreamIds.new)
    carrier: str = "twilio"


# ------------------------------------------------------------------ arguments


def parse_say(value: str) -> tuple[float, Path]:
    """``TIME:WAV`` from the command line, e.g. ``2.5:hello.wav``; the file must exist."""
    when, sep, path = value.partition(":")
    try:
        start = float(when)
    except ValueError:
        start = -1.0
    if not sep or not path or not 0 <= start < 3600:
        raise argparse.ArgumentTypeError(f"expected TIME:WAV with TIME in seconds, e.g. 2.5:hello.wav; got {value!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return start, Path(path)


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600; got {value!r}")
    return number


def _dbfs(value: str) -> float:
    try:
        level = float(value)
    except ValueError:
        level = 1.0
    if not -120 <= level <= 0:
        raise argparse.ArgumentTypeError(f"expected a level in dBFS from -120 to 0, e.g. -45; got {value!r}")
    return level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `bridge call`."""
    parser.add_argument("url", nargs="?", default=DEFAULT_URL,
                        help=f"the bridge: http(s):// or ws(s):// base URL (default {DEFAULT_URL})")
    parser.add_argument("--say", metavar="TIME:WAV", type=parse_say, action="append", default=[],
                        help="caller audio starting TIME seconds into the call (repeatable; "
                             "default: a demo caller voiced offline)")
    parser.add_argument("--duration", type=_positive, default=12.0, help="call length in seconds (default 12)")
    parser.add_argument("--noise", metavar="DBFS", type=_dbfs, help="white noise under the caller, e.g. -45")
    parser.add_argument("--out", type=Path, default=Path("call.wav"),
                        help="stereo WAV to write: caller left, agent as heard right (default call.wav)")
    parser.add_argument("--carrier", choices=sorted(DIALECTS), default="twilio",
                        help="dial as this carrier does: its webhook, its answer document, its media dialect")
    parser.add_argument("--media-url", help="ws(s):// media socket to dial directly, skipping the webhook")
    parser.add_argument("--auth-token", help="sign the requests like Twilio (default: TWILIO_AUTH_TOKEN "
                                             "from the environment or .env)")


# ------------------------------------------------------------------ where to dial


def resolve_target(url: str, media_url: str | None = None) -> Target:
    """The webhook for a base URL; a ws(s) URL ending in /twilio/media is dialled directly.

    Why accept both: people paste whatever they have at hand, the server's http address, the
    ngrok https one, or the wss URL from a log line."""
    if media_url:
        if urllib.parse.urlsplit(media_url).scheme not in ("ws", "wss"):
            raise DialError(f"--media-url must be ws:// or wss://, got {media_url!r}")
        return Target(None, media_url)
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise DialError(f"expected an http(s):// or ws(s):// URL such as {DEFAULT_URL}; got {url!r}")
    path = parts.path.rstrip("/")
    if parts.scheme in ("ws", "wss") and path.endswith(MEDIA_PATH):
        return Target(None, urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")))
    for suffix in (WEBHOOK_PATH, MEDIA_PATH):
        path = path.removesuffix(suffix)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return Target(urllib.parse.urlunsplit((scheme, parts.netloc, path + WEBHOOK_PATH, "", "")))


@dataclass(frozen=True)
class Stream:
    """The media socket the TwiML names: the URL to dial, the URL Twilio signs, the parameters."""

    url: str
    signed_url: str
    parameters: dict[str, str]
    action: str | None = None  # the <Connect action> URL: what Twilio asks once the stream has closed


def media_url_from_twiml(twiml: str, webhook_url: str) -> Stream:
    """The ``<Connect><Stream url>`` to dial and its ``<Parameter>``s, as Twilio reads them.

    Twilio only dials wss://, but a bridge on plain http (local development) has no TLS: when the
    webhook was reached over http and the stream points back at the same host (or at loopback),
    dial ws:// instead, as the TLS-terminating proxy in front of a real server would. The
    signature still covers the wss:// URL, which is what Twilio signs."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError:
        raise DialError(f"the webhook answered with something other than TwiML: {twiml[:80]!r}") from None
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        said = " ".join(t.strip() for t in root.itertext() if t.strip())
        raise DialError("the TwiML has no <Connect><Stream url>" + (f"; it says: {said!r}" if said else ""))
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    hook = urllib.parse.urlsplit(webhook_url)
    media = urllib.parse.urlsplit(urllib.parse.urljoin(webhook_url, stream.get("url", "")))
    scheme = {"https": "wss", "http": "ws"}.get(media.scheme, media.scheme)
    signed = urllib.parse.urlunsplit((scheme, media.netloc, media.path, "", ""))
    loopback = media.hostname in ("127.0.0.1", "localhost", "::1")
    if hook.scheme == "http" and scheme == "wss" and (media.netloc == hook.netloc or loopback):
        scheme = "ws"
    connect = root.find("./Connect")
    action = connect.get("action") if connect is not None else None
    return Stream(urllib.parse.urlunsplit((scheme, media.netloc, media.path, "", "")), signed, params,
                  urllib.parse.urljoin(webhook_url, action) if action else None)


def fetch_ending(stream: Stream, webhook_url: str | None, ids: wire.StreamIds, auth_token: str | None) -> str | None:
    """Ask the ``<Connect action>`` URL as Twilio does once the bridge closed the stream, and say
    what Twilio would do next: ``transfer to +1…`` or ``hang-up``. None when it cannot be asked.

    The URL names the public host; the request goes to the host the webhook was reached at (as a
    tunnel or proxy would forward it), signed for the public URL, as Twilio signs it."""
    if stream.action is None or webhook_url is None:
        return None
    public = urllib.parse.urlsplit(stream.action)
    reached = urllib.parse.urlsplit(webhook_url)
    url = urllib.parse.urlunsplit((reached.scheme, reached.netloc, public.path, public.query, ""))
    form = {"AccountSid": ids.account_sid, "CallSid": ids.call_sid, "CallStatus": "in-progress"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "TwilioProxy/1.1"}
    if auth_token:
        headers[SIGNATURE_HEADER] = compute_signature(auth_token, stream.action, form)
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            root = ET.fromstring(response.read(1 << 16).decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ET.ParseError):
        return None
    dial = root.find("./Dial")
    return f"transfer to {(dial.text or '').strip()}" if dial is not None else "hang-up"


def _fetch_twiml(webhook_url: str, ids: wire.StreamIds, auth_token: str | None) -> str:
    """POST the voice webhook with Twilio's parameters (protocols.md §2.8); blocking."""
    form = {"AccountSid": ids.account_sid, "ApiVersion": "2010-04-01", "CallSid": ids.call_sid,
            "CallStatus": "ringing", "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"}
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "TwilioProxy/1.1"}
    if auth_token:
        headers[SIGNATURE_HEADER] = compute_signature(auth_token, webhook_url, form)
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(webhook_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return str(response.read(1 << 16).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise DialError(f"the webhook {webhook_url} answered HTTP {exc.code} {exc.reason}{_hint(exc.code)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DialError(f"cannot reach {webhook_url}: {reason} (is `bridge serve` running?)") from None


def _hint(status: int) -> str:
    if status == 403:
        return " (the bridge checks Twilio signatures: pass its TWILIO_AUTH_TOKEN with --auth-token)"
    return " (the bridge is at max_calls or shutting down)" if status == 503 else ""


# ------------------------------------------------------------------ the caller


def noise(dbfs: float, seconds: float, seed: int = 1) -> bytes:
    """White noise at an RMS of ``dbfs``: a line that is never quite silent, to tune the VAD with."""
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal(round(seconds * SAMPLE_RATE)) * 32768 * 10 ** (dbfs / 20)
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def demo_timeline(lines: tuple[tuple[float, str], ...] = DEMO_LINES) -> Timeline:
    """The demo caller, voiced by the offline engine, so the repository ships no recordings.

    Raises `DialError` when the offline voice is not installed."""
    from bridge.tts import espeak

    try:
        engine = espeak.load()
        segments = []
        for start, text in lines:
            pcm = engine.synthesize(text, voice=DEMO_VOICE, rate_wpm=165)
            samples = soxr.resample(np.frombuffer(pcm, dtype="<i2"), engine.sample_rate, SAMPLE_RATE)
            segments.append(Segment(start, samples.astype("<i2").tobytes(), repr(text)))
    except (espeak.EspeakUnavailable, espeak.EspeakError) as exc:
        raise DialError(f"no --say given and the demo caller cannot be voiced: {exc}") from None
    return Timeline(segments)


def _timeline(args: argparse.Namespace) -> Timeline:
    try:
        timeline = Timeline.from_files(args.say) if args.say else demo_timeline()
    except (wave.Error, EOFError, OSError, ValueError) as exc:
        raise DialError(f"cannot read a --say file as PCM WAV: {exc}") from None
    heard = [segment for segment in timeline.segments if segment.start < args.duration]  # the rest is never said
    background = noise(args.noise, min(args.duration, 60.0)) if args.noise is not None else None
    return Timeline(heard, background)


def _auth_token(given: str | None) -> str | None:
    if given:
        return given
    return os.environ.get("TWILIO_AUTH_TOKEN") or dotenv_values(Path(".env")).get("TWILIO_AUTH_TOKEN") or None


# ------------------------------------------------------------------ the call


async def _dial(plan: _Plan) -> tuple[PhoneCall, Stream]:
    """Webhook, TwiML, then the media socket: the phone, connected and talking."""
    target, ids = plan.target, plan.ids
    if target.webhook_url is not None and plan.carrier != "twilio":
        print(f"dialing {target.webhook_url} as {plan.carrier}", flush=True)
        try:
            url = await asyncio.to_thread(fetch_stream_url, plan.carrier, target.webhook_url, _TIMEOUT, ids.call_sid)
        except ValueError as exc:
            raise DialError(str(exc)) from None
        stream = Stream(url, url, {})
    elif target.webhook_url is not None:
        print(f"dialing {target.webhook_url}", flush=True)
        twiml = await asyncio.to_thread(_fetch_twiml, target.webhook_url, ids, plan.auth_token)
        stream = media_url_from_twiml(twiml, target.webhook_url)
    else:
        assert target.media_url is not None
        stream = Stream(target.media_url, target.media_url, {})
    print(f"media stream {stream.url} ({plan.duration:g} s call)", flush=True)
    phone = PhoneCall(stream.url, caller=plan.timeline, duration=plan.duration, stream_sid=ids.stream_sid,
                      call_sid=ids.call_sid, account_sid=ids.account_sid, custom_parameters=stream.parameters,
                      auth_token=plan.auth_token if plan.carrier == "twilio" else None,
                      signed_url=stream.signed_url, open_timeout=_TIMEOUT, dialect=dialect(plan.carrier))
    try:
        await phone.start()
    except InvalidStatus as exc:
        code = exc.response.status_code
        raise DialError(f"the bridge refused the media socket: HTTP {code}{_hint(code)}") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise DialError(f"cannot open the media socket {stream.url}: {exc or type(exc).__name__}") from None
    return phone, stream


async def _call(plan: _Plan) -> int:
    """Place the call, play it out (Ctrl-C hangs up early), then report and write the WAV."""
    target = plan.target.webhook_url or plan.target.media_url or ""
    metrics = stages.metrics_url(target)
    before = await asyncio.to_thread(stages.scrape, metrics)
    try:
        phone, stream = await _dial(plan)
    except DialError as exc:
        print(f"bridge call: {exc}", file=sys.stderr)
        return 1
    try:
        report = await phone.wait()
    except asyncio.CancelledError:  # Ctrl-C: hang up, and still say what happened
        report = await phone.hangup()
    try:  # the recording first: it is what a bug report needs, even if stdout is gone
        phone.write_wav(plan.out)
    except OSError as exc:
        print(f"bridge call: cannot write {plan.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(report.timeline_text(marks=False))
    ending = None
    if report.server_closed is not None and report.server_closed < plan.duration - 0.05:
        ending = await asyncio.to_thread(fetch_ending, stream, plan.target.webhook_url, plan.ids, plan.auth_token)
    print("summary:")
    after = await asyncio.to_thread(stages.scrape, metrics) if before is not None else None
    for line in [*summary_lines(report, ending), *stages.stage_lines(before, after)]:
        print(f"  {line}")
    print(f"wrote {plan.out} (stereo, 8 kHz: caller left, agent as heard right)", flush=True)
    return 0


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def summary_lines(report: CallReport, ending: str | None = None) -> list[str]:
    """The numbers people tune by, one per line: latencies, barge-in reactions, underruns; and
    how the call ended (``ending``: what ``/twilio/after`` answered, when the bridge closed it)."""
    heard = report.greeting_latency
    lines = [f"greeting latency: {_ms(heard)}" if heard is not None else "greeting latency: no greeting heard"]
    for i, b in enumerate(report.barge_ins, 1):
        if b.missed:
            lines.append(f"barge-in {i} ({b.label}): MISSED, no clear within 2 s")
        else:
            over = f", agent heard {_ms(b.talk_over)} over the caller after it" if b.talk_over >= 0.0005 else ""
            lines.append(f"barge-in {i} ({b.label}): reaction {_ms(b.reaction)}{over}")
    said = [r for r in report.replies if r.end <= report.duration]  # not what the caller never got to say
    for i, r in enumerate(said, 1):
        latency = f"latency {_ms(r.latency)}" if r.latency is not None else "no reply heard"
        lines.append(f"reply {i} (after {r.label}): {latency}")
    gaps = [u.gap for u in report.underruns]
    lines.append(f"underruns: {len(gaps)}" + (f", longest gap {_ms(max(gaps))}" if gaps else ""))
    lines.append(f"agent audio heard: {report.agent_seconds:.1f} s in {report.media_messages} media messages")
    if any(report.leaked_frames):
        lines.append(f"LEAK: {sum(report.leaked_frames)} packets of cleared audio were played")
    if report.malformed:
        lines.append(f"malformed messages from the bridge: {len(report.malformed)} ({report.malformed[0][1]})")
    if report.server_closed is not None and (ending or report.server_closed < report.duration - 0.05):
        then = f": {ending}" if ending else ""
        lines.append(f"the call was ended by the bridge at {report.server_closed:.3f} s{then}")
    return lines


def run_from_args(args: argparse.Namespace) -> int:
    """`bridge call`: 0 once a call was placed and reported, 1 if it could not be placed, 2 for usage."""
    try:
        if not args.out.parent.is_dir():
            raise DialError(f"--out {args.out}: no such directory {args.out.parent}")
        target = resolve_target(args.url, args.media_url)
        carrier = getattr(args, "carrier", "twilio")
        if carrier != "twilio" and target.webhook_url is not None:
            target = Target(target.webhook_url.removesuffix(WEBHOOK_PATH) + WEBHOOKS[carrier][1])
        plan = _Plan(target, _timeline(args), args.duration, args.out, _auth_token(args.auth_token), carrier=carrier)
    except DialError as exc:
        print(f"bridge call: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_call(plan))
    except KeyboardInterrupt:
        return 130
