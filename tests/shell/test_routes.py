"""The HTTP routes in-process: the webhook's TwiML, ``/healthz``, ``/metrics``, and the busy
answer once ``server.max_calls`` calls are live or the worker is over ``server.max_load``."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient, WebSocketDenialResponse

from tests.shell.conftest import Phone, build

FORM = {"CallSid": "CA0123456789abcdef0123456789abcdef", "From": "+14155550100", "To": "+14155550199"}


def twiml(response) -> ET.Element:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    return ET.fromstring(response.text)


def stream_url(response) -> str:
    root = twiml(response)
    assert root.tag == "Response"
    [connect] = list(root)
    [stream] = list(connect)
    assert (connect.tag, stream.tag) == ("Connect", "Stream")
    return stream.attrib["url"]


def metric(client: TestClient, name: str) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} is not in /metrics")


def test_the_webhook_answers_twiml_that_streams_to_the_public_wss_url(tmp_path, client_for):
    client = client_for(build(tmp_path, ["Hello."]))
    assert stream_url(client.post("/twilio/voice", data=FORM)) == "wss://testserver/twilio/media"
    assert stream_url(client.get("/twilio/voice")) == "wss://testserver/twilio/media"
    proxied = client.post("/twilio/voice", data=FORM,
                          headers={"X-Forwarded-Host": "abc.ngrok.app", "X-Forwarded-Proto": "https"})
    assert stream_url(proxied) == "wss://abc.ngrok.app/twilio/media"
    assert client.put("/twilio/voice").status_code == 405


def test_public_url_names_the_stream_whatever_host_the_request_came_to(tmp_path, client_for):
    client = client_for(build(tmp_path, ["Hello."], PUBLIC_URL="https://bridge.example.com"))
    response = client.post("/twilio/voice", data=FORM, headers={"X-Forwarded-Host": "elsewhere.example"})
    assert stream_url(response) == "wss://bridge.example.com/twilio/media"


def test_healthz_reports_ok_and_the_live_calls(tmp_path, client_for):
    shell = build(tmp_path, ["Hello, thanks for calling."])
    client = client_for(shell)
    assert client.get("/healthz").json().items() >= {"status": "ok", "calls": 0}.items()
    with client.websocket_connect("/twilio/media") as ws:
        phone = Phone(ws)
        phone.start()
        assert phone.listen(3.0, until=lambda: bool(phone.received))
        during = client.get("/healthz")
        assert phone.hang_up() == 1000
    assert during.status_code == 200 and during.json().items() >= {"status": "ok", "calls": 1}.items()
    assert client.get("/healthz").json().items() >= {"status": "ok", "calls": 0}.items()


def test_metrics_count_a_call_from_start_to_end(tmp_path, client_for):
    shell = build(tmp_path, ["Hello, thanks for calling."])
    client = client_for(shell)
    calls, live = metric(client, "bridge_calls_total"), metric(client, "bridge_live_calls")
    with client.websocket_connect("/twilio/media") as ws:
        phone = Phone(ws)
        phone.start()
        assert phone.listen(3.0, until=lambda: bool(phone.received))
        assert metric(client, "bridge_live_calls") == live + 1
        phone.hang_up()
    assert metric(client, "bridge_calls_total") == calls + 1
    assert metric(client, "bridge_live_calls") == live


@pytest.mark.parametrize("max_calls", [1, 2])
def test_at_max_calls_the_webhook_says_busy_and_the_stream_is_refused(tmp_path, client_for, max_calls):
    shell = build(tmp_path, ["Hello, thanks for calling."], BRIDGE_MAX_CALLS=str(max_calls))
    client = client_for(shell)
    rejected = metric(client, "bridge_calls_rejected_total")
    sessions = [client.websocket_connect("/twilio/media") for _ in range(max_calls)]
    phones = [Phone(ws.__enter__()) for ws in sessions]
    try:
        for phone in phones:
            phone.start()
            assert phone.listen(3.0, until=lambda phone=phone: bool(phone.received))
        busy = twiml(client.post("/twilio/voice", data=FORM))
        assert [child.tag for child in busy] == ["Say", "Hangup"], "a polite message, then the caller is hung up on"
        assert "busy" in (busy[0].text or "")
        with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/twilio/media"):
            pass
        assert refused.value.status_code == 503 and refused.value.headers["retry-after"] == "10"
        assert len(shell.tts) == max_calls, "a refused stream opens no TTS session"
        assert metric(client, "bridge_calls_rejected_total") == rejected + 2
    finally:
        for phone, ws in zip(phones, sessions, strict=True):
            phone.hang_up()
            ws.__exit__(None, None, None)
    assert stream_url(client.post("/twilio/voice", data=FORM)) == "wss://testserver/twilio/media", "room again"


def _health_until(client: TestClient, status: str, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        body = client.get("/healthz").json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_worker_over_max_load_turns_new_calls_away_and_keeps_those_it_answered(tmp_path, client_for):
    """The worker's own CPU, measured once a second: while its process uses more than
    ``server.max_load`` of a core (here a thread of the process spins), the webhook answers "busy"
    and ``/healthz`` 503 ``busy``, so a balancer sends calls elsewhere; a call whose stream comes
    (answered before, or by another worker) is still taken; once calm, calls are taken again."""
    shell = build(tmp_path, ["Hello, thanks for calling."], BRIDGE_MAX_LOAD="0.5")
    client = client_for(shell)
    assert _health_until(client, "ok", 5.0)["status"] == "ok"
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        body = _health_until(client, "busy", 6.0)
        assert body["status"] == "busy" and body["load"] >= 0.5, body
        assert client.get("/healthz").status_code == 503
        busy = twiml(client.post("/twilio/voice", data=FORM))
        assert [child.tag for child in busy] == ["Say", "Hangup"]
        telnyx = ET.fromstring(client.post("/telnyx/voice", data={"CallSid": "v3:abc"}).text)
        assert [child.tag for child in telnyx] == ["Say", "Hangup"], "every carrier's webhook says busy"
        with client.websocket_connect("/twilio/media") as ws:  # a call answered before: taken, and served
            phone = Phone(ws)
            phone.start()
            assert phone.listen(5.0, until=lambda: bool(phone.received)), "the answered call got no greeting"
            assert phone.hang_up() == 1000
    finally:
        stop.set()
        spinner.join()
    assert _health_until(client, "ok", 6.0)["status"] == "ok"
    assert client.get("/healthz").status_code == 200
    assert stream_url(client.post("/twilio/voice", data=FORM)) == "wss://testserver/twilio/media"
