"""Placing calls through Twilio's REST API: ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``.

HTTP Basic auth with the account SID and auth token; a form body with ``To``, ``From`` and
``Url`` (our voice webhook, which answers with the same ``<Connect><Stream>`` as an incoming call,
so the answered call runs the same agent). Answering-machine detection on request:
``MachineDetection=DetectMessageEnd`` makes Twilio wait for the greeting's beep before it fetches
the webhook, which then carries ``AnsweredBy`` (``human``, ``machine_end_beep``, …); see
https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource and
https://www.twilio.com/docs/voice/answering-machine-detection. The base URL is a setting
(``TWILIO_API_BASE_URL``) so tests can point it at ``bridge.testing.fake_twilio``.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bridge.core.numbers import E164

__all__ = ["PlacedCall", "TwilioRest", "TwilioRestError"]


class TwilioRestError(Exception):
    """Twilio refused or could not be reached; the message is one line with no credential in it."""


@dataclass(frozen=True, slots=True)
class PlacedCall:
    sid: str
    status: str
    to: str


class TwilioRest:
    def __init__(self, account_sid: str, auth_token: str, *, base_url: str = "https://api.twilio.com",
                 client: httpx.AsyncClient | None = None) -> None:
        self.account_sid = account_sid
        self._auth = (account_sid, auth_token)
        self.base_url = base_url.rstrip("/")
        self._client = client

    async def place_call(self, to: str, from_: str, webhook_url: str, *, detect_machine: bool = False,
                         status_callback: str | None = None, amd_callback: str | None = None) -> PlacedCall:
        """Dial ``to`` from ``from_``; when it answers, Twilio fetches ``webhook_url``. With
        ``amd_callback`` the machine detection is asynchronous: the verdict is POSTed there."""
        for name, number in (("to", to), ("from", from_)):
            if not E164.match(number):
                raise ValueError(f"--{name} must be an E.164 number such as +15551234567, not {number[:32]!r}")
        form = {"To": to, "From": from_, "Url": webhook_url, "Method": "POST"}
        if detect_machine:
            form["MachineDetection"] = "DetectMessageEnd"
            if amd_callback:
                form["AsyncAmd"] = "true"
                form["AsyncAmdStatusCallback"] = amd_callback
        if status_callback:
            form["StatusCallback"] = status_callback
        url = f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls.json"
        client = self._client or httpx.AsyncClient(timeout=15.0)
        try:
            response = await client.post(url, data=form, auth=self._auth)
        except httpx.HTTPError as exc:
            raise TwilioRestError(f"cannot reach Twilio's API at {self.base_url}: {type(exc).__name__}") from None
        finally:
            if self._client is None:
                await client.aclose()
        return _placed(response, to)


def _placed(response: httpx.Response, to: str) -> PlacedCall:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 201 or not isinstance(body, dict) or not isinstance(body.get("sid"), str):
        detail = body.get("message") if isinstance(body, dict) else None
        code = body.get("code") if isinstance(body, dict) else None
        why = f"{detail} (Twilio error {code})" if detail else f"HTTP {response.status_code}"
        raise TwilioRestError(f"Twilio refused the call: {str(why)[:200]}")
    return PlacedCall(body["sid"], str(body.get("status", "queued")), to)
