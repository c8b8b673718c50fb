"""A webhook agent: each turn is POSTed as JSON to the user's URL, the reply streams back as text.

So an agent can live in any language and any process: it needs one HTTP route. The request body
(UTF-8 JSON, ``Content-Type: application/json``)::

    {"conversation": "9f0c…", "turn": 2, "transcript": "what time do you open" | null,
     "digits": "", "history": [{"role": "assistant", "content": "Hello!"}, {"role": "user", ...}],
     "audio": {"encoding": "pcm_s16le", "sample_rate": 8000, "base64": "…"}}   # only with audio on
                                            # (the call's rate: 16000 on a wideband line)

The answer is streamed, and each piece is spoken as soon as it arrives (sentence by sentence):

* ``text/plain`` (or no type): the body is the reply's text; newline-delimited chunks are the
  natural way to stream it, and a newline counts as a space.
* ``application/x-ndjson`` / ``application/jsonl``: one JSON value per line, a string or
  ``{"text": "..."}``. A line ``{"end_call": true}`` ends the call once the reply has been heard;
  ``{"transfer": "+15551234567"}`` hands the caller to that number (if it is on the allow-list).

With a shared secret, every request carries ``X-Bridge-Timestamp: <unix seconds>`` and
``X-Bridge-Signature: sha256=<hex>``, the HMAC-SHA256 keyed with the secret's UTF-8 bytes over the
exact bytes ``<timestamp> + "." + <request body>``. The timestamp is signed so a receiver can
refuse old requests replayed by someone who recorded one (``verify_signature`` does both checks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from bridge.agents.base import AgentError, CallControl, HangUp, Transfer, Turn
from bridge.agents.http import check_response, json_value, new_client

__all__ = [
    "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookAgent", "control_of_line", "sign", "text_of_line", "turn_body",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Bridge-Signature"
TIMESTAMP_HEADER = "X-Bridge-Timestamp"
_NDJSON = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/ndjson")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
                     max_age_s: float = 300.0) -> bool:
    """For receivers: True when the request was signed with ``secret`` less than ``max_age_s`` ago."""
    timestamp = headers.get(TIMESTAMP_HEADER) or headers.get(TIMESTAMP_HEADER.lower()) or ""
    signature = headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower()) or ""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def turn_body(conversation: str, turn: Turn, *, audio: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation": conversation,
        "turn": turn.number,
        "transcript": turn.transcript,
        "digits": turn.digits,
        "history": [{"role": m.role, "content": m.content} for m in turn.history],
    }
    if turn.idle:  # the caller has been silent: the agent may prompt them (docs/agents.md, idle callers)
        body["idle"] = True
    if audio:
        body["audio"] = {"encoding": "pcm_s16le", "sample_rate": turn.rate,
                         "base64": base64.b64encode(turn.utterance).decode("ascii")}
    return body


def control_of_line(line: str) -> CallControl | None:
    """The call control an NDJSON line asks for: ``{"end_call": true}`` or ``{"transfer": "+1…"}``."""
    try:
        value = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    if not isinstance(value, Mapping):
        return None
    if isinstance(value.get("transfer"), str):
        return Transfer(value["transfer"].strip())
    if value.get("end_call") is True:
        return HangUp("webhook")
    return None


def text_of_line(line: str) -> str:
    """One NDJSON line's text: a JSON string, or an object's ``text``; blank lines are nothing."""
    if not line.strip():
        return ""
    value = json_value(line, "webhook: a reply line")
    if isinstance(value, Mapping):
        value = value.get("text", "")
    if not isinstance(value, str):
        raise AgentError("webhook: a reply line that is neither a string nor {\"text\": ...}")
    return value


class WebhookAgent:
    """POSTs each turn to ``url`` and yields the streamed answer's text as it arrives."""

    def __init__(self, url: str, *, secret: str | None = None, send_audio: bool = False,
                 client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.secret = secret
        self.send_audio = send_audio
        self.conversation = uuid.uuid4().hex
        self._client = client
        self._own_client = client is None

    async def reply(self, turn: Turn) -> AsyncIterator[str | CallControl]:
        body = json.dumps(turn_body(self.conversation, turn, audio=self.send_audio), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/plain, application/x-ndjson"}
        if self.secret:
            timestamp = str(int(time.time()))
            headers |= {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.secret, timestamp, body)}
        if self._client is None:
            self._client = new_client()
        async with self._client.stream("POST", self.url, content=body, headers=headers) as response:
            await check_response(response, "webhook")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind in _NDJSON:
                async for line in response.aiter_lines():
                    if text := text_of_line(line):
                        yield text
                    if (control := control_of_line(line)) is not None:
                        yield control
                        return
            else:
                async for text in response.aiter_text():
                    if text:
                        yield text.replace("\r\n", " ").replace("\n", " ")

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        """Nothing to do: the history travels with every request."""

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
