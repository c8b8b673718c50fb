"""Drain in-process: what a deploy's SIGTERM starts (``bridge.server.drain``), minus the signal.

While draining, ``/healthz`` answers 503 so a load balancer stops sending calls, the webhook
answers the busy TwiML, new media streams are refused, and a live call goes on until
``server.drain_timeout_s``, then ends the way a hang-up ends it. The signal handling itself is
covered end to end (tests/e2e/faults/test_capacity_and_drain.py, tests/e2e/test_scaleout.py).
"""

from __future__ import annotations

import time

import pytest
from starlette.testclient import WebSocketDenialResponse

from tests.shell.conftest import Phone, build

LONG_GREETING = " ".join(["This greeting goes on for quite a while, so the call is still live."] * 3)
DRAIN_S = 1.0


def test_a_draining_app_turns_new_calls_away_and_ends_the_live_one_after_the_timeout(tmp_path, client_for):
    shell = build(tmp_path, [LONG_GREETING], BRIDGE_DRAIN_TIMEOUT_S=str(DRAIN_S))
    client = client_for(shell)
    with client.websocket_connect("/twilio/media") as ws:
        phone = Phone(ws)
        phone.start()
        assert phone.listen(3.0, until=lambda: bool(phone.media_pcm())), "the call is live"
        assert client.portal is not None
        drained = client.portal.start_task_soon(shell.app.state.drainer.drain)
        began = time.monotonic()
        phone.listen(0.1)

        health = client.get("/healthz")
        assert health.status_code == 503 and health.json().items() >= {"status": "draining", "calls": 1}.items()
        busy = client.post("/twilio/voice", data={"CallSid": "CA1"})
        assert busy.status_code == 200 and "<Hangup/>" in busy.text and "<Stream" not in busy.text
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/twilio/media"):
            pass
        assert refused.value.status_code == 503
        assert len(shell.tts) == 1, "the refused stream opened no TTS session"

        assert phone.wait_closed(DRAIN_S + 5), "the bridge ended the live call"
        ended_after = time.monotonic() - began
    drained.result(timeout=5)
    assert DRAIN_S - 0.1 < ended_after < DRAIN_S + 3, ended_after
    assert phone.close_code == 1000, "ended the way a hang-up ends it"
    assert phone.media_pcm(after=began + 0.3), "the live call went on while draining"
    assert shell.tts[0].closed, "the TTS was told goodbye"
    assert client.get("/healthz").json().items() >= {"status": "draining", "calls": 0}.items()
