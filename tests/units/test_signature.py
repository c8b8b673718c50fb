"""Twilio request signatures, checked against twilio-python's RequestValidator (a test-only oracle)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from collections.abc import Iterator, Mapping, Sequence
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

from bridge.carriers.twilio.signature import compute_signature, is_valid_signature

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


class MultiDict(Mapping[str, str]):
    """Repeated names, the way Flask's MultiDict shows them to the oracle (``getall``)."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def __getitem__(self, name: str) -> str:
        return next(v for k, v in reversed(self.pairs) if k == name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self.pairs))

    def __len__(self) -> int:
        return len(dict.fromkeys(k for k, _ in self.pairs))

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


def hmac_b64(token: str, text: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def test_published_vector() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == EXPECTED
    assert RequestValidator(TOKEN).compute_signature(URL, PARAMS) == EXPECTED
    assert is_valid_signature(TOKEN, URL, PARAMS, EXPECTED)


def test_published_vector_with_the_default_port_either_way() -> None:
    assert is_valid_signature(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS, EXPECTED)
    with_port = compute_signature(TOKEN, "https://mycompany.com:443/myapp.php?foo=1&bar=2", PARAMS)
    assert is_valid_signature(TOKEN, URL, PARAMS, with_port)


@pytest.mark.parametrize("change", ["token", "url", "param", "extra", "signature"])
def test_any_change_invalidates(change: str) -> None:
    token, url, params, signature = TOKEN, URL, dict(PARAMS), EXPECTED
    if change == "token":
        token = "12346"
    elif change == "url":
        url = URL.replace("foo=1", "foo=2")
    elif change == "param":
        params["Digits"] = "1235"
    elif change == "extra":
        params["CallStatus"] = "ringing"
    else:
        signature = EXPECTED[:-2] + "A="
    assert not is_valid_signature(token, url, params, signature)


def test_media_stream_handshake_url() -> None:
    url = "wss://abc.ngrok.app/twilio/media"
    signature = hmac_b64(TOKEN, url)
    assert compute_signature(TOKEN, url, {}) == signature
    assert is_valid_signature(TOKEN, url, {}, signature)
    assert is_valid_signature(TOKEN, url, None, signature)
    assert RequestValidator(TOKEN).validate(url, {}, signature)
    assert not is_valid_signature(TOKEN, "wss://abc.ngrok.app/twilio/other", {}, signature)
    # Signed with an explicit port, checked on the bare URL (and the other way round).
    assert is_valid_signature(TOKEN, "wss://abc.ngrok.app:8443/twilio/media", {}, signature)
    assert is_valid_signature(TOKEN, url, {}, hmac_b64(TOKEN, "wss://abc.ngrok.app:80/twilio/media"))


def test_repeated_names_sign_every_value_sorted() -> None:
    params = MultiDict([("b", "2"), ("a", "z"), ("a", "y"), ("a", "y")])
    expected = hmac_b64(TOKEN, "https://h.example/voice" + "ay" + "az" + "b2")
    assert compute_signature(TOKEN, "https://h.example/voice", params) == expected
    assert compute_signature(TOKEN, "https://h.example/voice", {"a": ["z", "y"], "b": "2"}) == expected
    form = FormData([("b", "2"), ("a", "z"), ("a", "y")])  # what Starlette's request.form() returns
    assert is_valid_signature(TOKEN, "https://h.example/voice", form, expected)


@pytest.mark.parametrize("url", ["https://h.example:notaport/x", "https://h.example:99999/x"])
def test_bad_urls_are_invalid_not_errors(url: str) -> None:
    assert not is_valid_signature(TOKEN, url, {}, "x")


def test_odd_values_and_signatures_are_invalid_not_errors() -> None:
    assert not is_valid_signature(TOKEN, URL, {"a": 3}, EXPECTED)
    assert not is_valid_signature(TOKEN, URL, PARAMS, "é" * 28)
    assert not is_valid_signature(TOKEN, URL, PARAMS, "\ud800")
    assert not is_valid_signature(TOKEN, URL, PARAMS, "")


# ---------------------------------------------------------------------------- against the oracle

labels = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
hosts = st.lists(labels, min_size=1, max_size=3).map(".".join)
segments = st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=8)
paths = st.lists(segments, max_size=3).map(lambda parts: "/" + "/".join(parts))
queries = st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3).map(urlencode)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["https", "http", "wss", "ws"]))
    port = draw(st.none() | st.sampled_from([80, 443]) | st.integers(1, 65535))
    query = draw(queries)
    netloc = draw(hosts) + ("" if port is None else f":{port}")
    return f"{scheme}://{netloc}{draw(paths)}" + (f"?{query}" if query else "")


form_values = st.text(max_size=12)
names = st.sampled_from(["From", "To", "CallSid", "Digits", "x", "é"]) | st.text(max_size=6)
pairs = st.lists(st.tuples(names, form_values), max_size=8)


@settings(max_examples=150, deadline=None)
@given(token=st.text(min_size=1, max_size=40), url=urls(), pairs=pairs)
def test_compute_signature_agrees_with_the_oracle(token: str, url: str, pairs: list[tuple[str, str]]) -> None:
    params = MultiDict(pairs)
    assert compute_signature(token, url, params) == RequestValidator(token).compute_signature(url, params)
    single = dict(pairs)
    assert compute_signature(token, url, single) == RequestValidator(token).compute_signature(url, single)


@settings(max_examples=150, deadline=None)
@given(token=st.text(min_size=1, max_size=40), url=urls(), pairs=pairs, signed=urls() | st.none(),
       port=st.sampled_from(["", ":443", ":80", ":8080"]), garbage=st.text(max_size=30))
def test_is_valid_signature_agrees_with_the_oracle(
    token: str, url: str, pairs: list[tuple[str, str]], signed: str | None, port: str, garbage: str
) -> None:
    params = MultiDict(pairs)
    # Sign the URL itself, a port variant of it, another URL, or nothing at all.
    scheme, rest = url.split("://", 1)
    host, _, tail = rest.partition("/")
    variant = f"{scheme}://{host.split(':')[0]}{port}/{tail}"
    for target in (url, variant, signed):
        signature = compute_signature(token, target, params) if target else garbage
        expected = RequestValidator(token).validate(url, params, signature)
        assert is_valid_signature(token, url, params, signature) is expected


@settings(max_examples=300, deadline=None)
@given(url=st.text(max_size=40), signature=st.text(max_size=30))
def test_arbitrary_urls_never_raise_and_agree_when_the_oracle_answers(url: str, signature: str) -> None:
    ours = is_valid_signature(TOKEN, url, {}, signature)
    try:
        theirs = RequestValidator(TOKEN).validate(url, {}, signature)
    except ValueError:  # the oracle raises on a bad port; we answer "invalid"
        assert ours is False
        return
    assert ours is theirs
