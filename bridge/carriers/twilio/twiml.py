"""TwiML for the voice webhook, and the public URL Twilio should stream to.

Twilio fetches TwiML from our webhook, then opens the media WebSocket at the URL we name in
``<Stream url>``. That URL must be public and ``wss://``, yet behind ngrok or a proxy the request
we see is plain ``http://localhost``: hence `public_base_url`, which prefers ``PUBLIC_URL`` and
otherwise trusts the forwarding headers proxies add (protocols.md §2.1, §2.7).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from xml.sax.saxutils import escape

__all__ = [
    "AFTER_PATH", "MEDIA_PATH", "VOICE_PATH", "busy_twiml", "dial_twiml", "hangup_twiml", "media_stream_url",
    "public_base_url", "stream_twiml",
]

MEDIA_PATH: Final = "/twilio/media"
VOICE_PATH: Final = "/twilio/voice"
AFTER_PATH: Final = "/twilio/after"  # the <Connect action> URL: what happens when the stream ends
_XML_DECL: Final = '<?xml version="1.0" encoding="UTF-8"?>'
_ATTR: Final = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
# A host[:port] as it may appear in a Host or X-Forwarded-Host header: a name or IPv4, or [IPv6].
_HOST: Final = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_XML_INVALID: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _attr(value: str) -> str:
    """An XML attribute value: escaped, and without characters XML 1.0 cannot carry at all."""
    return escape(_XML_INVALID.sub("", value), _ATTR)


def stream_twiml(ws_url: str, parameters: Mapping[str, str] | None = None, *, action: str | None = None) -> str:
    """``<Connect><Stream>``: a bidirectional media stream to ``ws_url``.

    Twilio drops a query string from the stream URL, so per-call data travels as
    ``<Parameter>`` children and comes back in ``start.customParameters``; a URL with a query
    is our bug, and raises ValueError. With ``action``, Twilio requests that URL (with the
    ``CallSid``) when the stream ends, and the call goes on with the TwiML it answers: that is how
    the agent hangs up or transfers the caller (the media stream alone cannot).
    """
    if not ws_url.startswith(("wss://", "ws://")) or "?" in ws_url or "#" in ws_url:
        raise ValueError("the stream URL must be ws:// or wss:// with no query string")
    pairs = (parameters or {}).items()
    children = "".join(f'<Parameter name="{_attr(name)}" value="{_attr(value)}"/>' for name, value in pairs)
    stream = f'<Stream url="{_attr(ws_url)}"' + (f">{children}</Stream>" if children else "/>")
    connect = f'<Connect action="{_attr(action)}">' if action else "<Connect>"
    return f"{_XML_DECL}<Response>{connect}{stream}</Connect></Response>"


def busy_twiml(message: str) -> str:
    """A polite ``<Say>`` and a hang-up, for when the bridge is at capacity."""
    return f"{_XML_DECL}<Response><Say>{escape(_XML_INVALID.sub('', message))}</Say><Hangup/></Response>"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The first value of a header, case-insensitively (a plain dict or Starlette's Headers)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def public_base_url(
    settings_public_url: str | None, headers: Mapping[str, str], request_url_scheme: str, request_host: str
) -> str:
    """``scheme://host[:port]`` (no trailing slash) at which Twilio can reach this server.

    ``PUBLIC_URL`` wins. Otherwise ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (first value of a
    comma list, as chained proxies send them), then the ``Host`` header, then the request's own
    host. A header that does not look like a scheme or a host is ignored rather than echoed into
    TwiML.
    """
    if settings_public_url:
        return settings_public_url.rstrip("/")
    proto = (_header(headers, "x-forwarded-proto") or "").lower()
    scheme = {"https": "https", "wss": "https", "http": "http", "ws": "http"}.get(proto)
    if scheme is None:
        scheme = "https" if request_url_scheme.lower() in ("https", "wss") else "http"
    for host in (_header(headers, "x-forwarded-host"), _header(headers, "host"), request_host):
        if host and _HOST.fullmatch(host):
            return f"{scheme}://{host}"
    raise ValueError("no usable host: set PUBLIC_URL")


def media_stream_url(base: str) -> str:
    """The media WebSocket URL for a base URL: https becomes wss, http becomes ws."""
    base = base.rstrip("/")
    for web, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(web):
            return ws + base[len(web) :] + MEDIA_PATH
    if base.startswith(("wss://", "ws://")):
        return base + MEDIA_PATH
    raise ValueError(f"not an http(s) or ws(s) URL: {base[:80]!r}")


def hangup_twiml() -> str:
    """What the ``<Connect action>`` URL answers once the agent ended the call (or nothing is pending)."""
    return f"{_XML_DECL}<Response><Hangup/></Response>"


def dial_twiml(number: str) -> str:
    """Hand the caller to ``number`` (already checked against the allow-list by the caller of this)."""
    return f"{_XML_DECL}<Response><Dial>{escape(_XML_INVALID.sub('', number))}</Dial></Response>"
