"""The Deepgram live client against ``bridge.testing.fake_deepgram``: a protocol-faithful
``/v1/listen`` server on 127.0.0.1 that each test starts (the cloud API is not reachable)."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from bridge.agents.stt import DeepgramTranscriber, SttClosed, SttError, Transcript, UtteranceEnd
from bridge.agents.stt.base import SpeechStarted, SttEvent
from bridge.agents.stt.deepgram_codec import DeepgramOptions, decode, listen_url
from bridge.testing.fake_deepgram import FakeDeepgram
from tests.support import load_wav, silence

KEY = "dg-Zk38fQ0pLw7x"
SAID = "Hi, I'm calling about my appointment next week."


async def speak(stream: object, pcm: bytes, frame: int = 320) -> None:
    """Send ``pcm`` in 20 ms frames, as the phone delivers it (faster than real time)."""
    for i in range(0, len(pcm), frame):
        await stream.send(pcm[i : i + frame])  # type: ignore[attr-defined]


async def collect(stream: object) -> list[SttEvent]:
    return [e async for e in stream.events()]  # type: ignore[attr-defined]


async def test_partials_then_a_final_marked_speech_final_then_utterance_end() -> None:
    async with FakeDeepgram(api_key=KEY, script=[SAID]) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url, endpointing_ms=300, utterance_end_ms=1000)
        async with stt.stream(rate=8000) as s:
            await speak(s, silence(0.3) + load_wav("caller_01.wav") + silence(1.5))
            await s.finish()
            events = await collect(s)
    transcripts = [e for e in events if isinstance(e, Transcript)]
    partials = [t for t in transcripts if not t.is_final]
    [final] = [t for t in transcripts if t.is_final]
    assert len(partials) >= 3 and partials[0].text and SAID.startswith(partials[0].text)
    assert all(len(a.text) <= len(b.text) for a, b in itertools.pairwise(partials)), "partials grow"
    assert transcripts.index(final) > transcripts.index(partials[-1]), "partials come first"
    assert final.text == SAID and final.speech_final
    assert final.duration >= 3.0 and final.start == 0.0
    assert isinstance(events[0], SpeechStarted) and 0.25 <= events[0].timestamp <= 0.4
    [end] = [e for e in events if isinstance(e, UtteranceEnd)]
    assert events.index(end) > events.index(final) and end.last_word_end == pytest.approx(3.25, abs=0.1)
    assert events[-1] == SttClosed(at=events[-1].at, clean=True)
    assert [e.at for e in events] == sorted(e.at for e in events)
    query = dg.connections[0].query
    assert query["encoding"] == "linear16" and query["sample_rate"] == "8000" and query["channels"] == "1"
    assert query["interim_results"] == "true" and query["endpointing"] == "300"
    assert query["utterance_end_ms"] == "1000" and query["model"] == "nova-3"
    assert dg.connections[0].authorization == f"Token {KEY}"


async def test_a_short_pause_stays_in_one_utterance_and_a_long_one_ends_it() -> None:
    clip = load_wav("caller_04.wav")  # "Yes."
    async with FakeDeepgram(api_key=KEY, script=["yes yes", "goodbye"]) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url, endpointing_ms=500, encoding="mulaw")
        async with stt.stream() as s:
            await speak(s, clip + silence(0.3) + clip + silence(0.8) + clip + silence(0.8))
            await s.finish()
            finals = [t for t in await collect(s) if isinstance(t, Transcript) and t.is_final]
    assert [(t.text, t.speech_final) for t in finals] == [("yes yes", True), ("goodbye", True)]
    assert dg.connections[0].query["encoding"] == "mulaw"


async def test_finish_mid_speech_flushes_the_pending_words_as_final_then_metadata() -> None:
    async with FakeDeepgram(api_key=KEY, script=[SAID]) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url)
        async with stt.stream() as s:
            await speak(s, load_wav("caller_01.wav")[:16000])  # one second, still talking
            await s.finish()
            events = await collect(s)
            await s.send(b"\x00" * 320)  # after the close: dropped, no error
        assert s.metadata is not None and s.metadata.duration == pytest.approx(1.0, abs=0.03)
    final = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert [(t.text, t.speech_final) for t in final] == [(SAID, False)]
    record = dg.connections[0]
    assert record.close_streams == 1 and record.close_code == 1000
    assert record.of_type("Results")[-1]["from_finalize"] is True
    assert isinstance(events[-1], SttClosed) and events[-1].clean


async def test_finalize_gives_final_results_and_the_stream_goes_on() -> None:
    async with FakeDeepgram(api_key=KEY, script=["first", "second"]) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url, endpointing_ms=None)
        async with stt.stream() as s:
            clip = load_wav("caller_04.wav")
            await speak(s, clip + silence(0.2))
            await s.finalize()
            await speak(s, silence(0.5) + clip + silence(0.2))
            await s.finish()
            finals = [t.text for t in await collect(s) if isinstance(t, Transcript) and t.is_final]
    assert finals == ["first", "second"]
    assert dg.connections[0].query["endpointing"] == "false" and dg.connections[0].finalizes == 1


async def test_a_refused_key_is_a_clear_error_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    wrong = "dg-wrong-Xp99ss0012"
    async with FakeDeepgram(api_key=KEY) as dg:
        stt = DeepgramTranscriber(wrong, base_url=dg.base_url)
        with caplog.at_level(logging.DEBUG), pytest.raises(SttError) as failure:
            async with stt.stream():
                pass
    message = str(failure.value)
    assert "refused the API key" in message and "401" in message and "INVALID_AUTH" in message
    assert wrong not in message and wrong not in repr(failure.value) and wrong not in repr(stt)
    assert failure.value.__cause__ is None and failure.value.__context__ is None  # no request (headers) inside
    assert wrong not in caplog.text and wrong not in stt.stream().url
    assert dg.refused == [f"Token {wrong}"] and dg.connections == []


async def test_an_unreachable_server_is_a_clear_error() -> None:
    stt = DeepgramTranscriber(KEY, base_url="ws://127.0.0.1:9", open_timeout_s=2)
    with pytest.raises(SttError, match=r"cannot connect to ws://127\.0\.0\.1:9"):
        async with stt.stream():
            pass


async def test_keep_alive_holds_a_silent_caller_past_the_server_timeout() -> None:
    async with FakeDeepgram(api_key=KEY, inactivity_timeout_s=0.6) as dg:
        quiet = DeepgramTranscriber(KEY, base_url=dg.base_url, keepalive_s=0.2)
        async with quiet.stream() as s:
            await asyncio.sleep(1.5)
            assert not s.closed
            await s.finish()
            last = (await collect(s))[-1]
            assert isinstance(last, SttClosed) and last.clean
        assert dg.connections[0].keepalives >= 4 and s.keepalives_sent == dg.connections[0].keepalives


async def test_without_keep_alive_the_server_closes_and_the_stream_says_why(caplog: pytest.LogCaptureFixture) -> None:
    async with FakeDeepgram(api_key=KEY, inactivity_timeout_s=0.4) as dg:
        lazy = DeepgramTranscriber(KEY, base_url=dg.base_url, keepalive_s=30)
        async with lazy.stream() as s:
            events = await asyncio.wait_for(collect(s), 5)
            await s.send(b"\x00" * 320)  # dropped, not raised
    [closed] = events
    assert isinstance(closed, SttClosed) and not closed.clean
    assert "1011" in closed.reason and "NET-0001" in closed.reason
    assert "deepgram stream ended: closed 1011" in caplog.text
    assert dg.connections[0].close_code == 1011


async def test_leaving_without_finish_ends_the_stream_unclean() -> None:
    async with FakeDeepgram(api_key=KEY) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url)
        async with stt.stream() as s:
            await speak(s, silence(0.2))
        events = await collect(s)
    assert events == [SttClosed(at=events[0].at, clean=False, reason="closed before finish")]
    assert dg.connections[0].audio_bytes == 3200


def test_the_url_carries_the_options_and_never_the_key() -> None:
    url = listen_url("https://dg.example.com/", DeepgramOptions(model="nova-2", encoding="mulaw",
                                                                 endpointing_ms=None, utterance_end_ms=None))
    assert url.startswith("wss://dg.example.com/v1/listen?model=nova-2&encoding=mulaw&sample_rate=8000")
    assert "endpointing=false" in url and "utterance_end_ms" not in url


def test_decode_reads_the_documented_messages_and_never_raises() -> None:
    results = ('{"type":"Results","channel_index":[0,1],"duration":1.5,"start":0.5,"is_final":true,'
               '"speech_final":true,"channel":{"alternatives":[{"transcript":"another big","confidence":0.9}]}}')
    assert decode(results, 1.0) == Transcript("another big", True, 1.0, speech_final=True, start=0.5, duration=1.5)
    assert decode('{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.395}', 2.0) == UtteranceEnd(2.0, 2.395)
    assert decode('{"type":"SpeechStarted","channel":[0],"timestamp":9.54}', 3.0) == SpeechStarted(3.0, 9.54)
    for bad in ("not json", "[1]", '{"type":"Results","channel":{}}', '{"type":"Results","channel":7}'):
        assert type(decode(bad, 0.0)).__name__ == "Malformed"
    assert decode('{"type":"Unheard"}', 0.0) is None


async def test_partials_arrive_while_the_caller_is_still_talking() -> None:
    """Paced at real time, as a call delivers audio: the first words come back mid-sentence."""
    clip = load_wav("caller_01.wav")  # 2.95 s
    async with FakeDeepgram(api_key=KEY, script=[SAID]) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url)
        async with stt.stream() as s:
            seen: list[tuple[float, Transcript]] = []

            async def read() -> None:
                async for t in s.transcripts():
                    seen.append((asyncio.get_running_loop().time(), t))

            reader = asyncio.create_task(read())
            loop = asyncio.get_running_loop()
            start = loop.time()
            for n, i in enumerate(range(0, len(clip), 1600)):  # 100 ms chunks, paced
                await s.send(clip[i : i + 1600])
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.1 - loop.time()))
            speech_ended = loop.time()
            await speak(s, silence(0.6))
            await s.finish()
            await asyncio.wait_for(reader, 5)
    first_partial_at = next(at for at, t in seen if not t.is_final and t.text)
    assert first_partial_at < speech_ended - 1.5, "the first words came back while the caller talked"
    assert [t.text for _, t in seen if t.is_final] == [SAID]


async def test_a_message_it_cannot_read_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    garbled = ["{not json", '{"type": "Results", "channel": {"alternatives": []}}', '["a list"]',
               '{"type": "Error", "description": "something went wrong upstream"}']
    async with FakeDeepgram(api_key=KEY, script=["yes"], first_messages=garbled) as dg:
        stt = DeepgramTranscriber(KEY, base_url=dg.base_url)
        async with stt.stream() as s:
            await speak(s, load_wav("caller_04.wav") + silence(0.5))
            await s.finish()
            events = await collect(s)
    assert [t.text for t in events if isinstance(t, Transcript) and t.is_final] == ["yes"]
    assert isinstance(events[-1], SttClosed) and events[-1].clean
    assert "deepgram: skipped a message that is not JSON" in caplog.text
    assert "skipped Results without channel.alternatives[0].transcript" in caplog.text
    assert "deepgram reported an error: something went wrong upstream" in caplog.text


async def test_the_fake_speaks_the_documented_wire_format() -> None:
    """A raw WebSocket client, no bridge code: binary audio up, JSON text frames down."""
    import json

    from websockets.asyncio.client import connect

    async with FakeDeepgram(api_key=KEY, script=["Yes."]) as dg:
        url = f"{dg.base_url}/v1/listen?encoding=linear16&sample_rate=8000&channels=1&interim_results=true"
        async with connect(url + "&endpointing=300&utterance_end_ms=1000&vad_events=true",
                           additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send('{"type": "KeepAlive"}')
            await ws.send(load_wav("caller_04.wav") + silence(1.2))
            await ws.send('{"type": "CloseStream"}')
            got = [json.loads(m) async for m in ws]
            assert ws.close_code == 1000
    kinds = [m["type"] for m in got]
    assert kinds[0] == "SpeechStarted" and kinds[-2:] == ["UtteranceEnd", "Metadata"]
    final = next(m for m in got if m["type"] == "Results" and m["is_final"])
    assert final["speech_final"] is True and final["channel"]["alternatives"][0]["transcript"] == "Yes."
    assert {"channel_index", "duration", "start", "metadata", "from_finalize"} <= final.keys()
    assert final["channel"]["alternatives"][0]["words"][0]["punctuated_word"] == "Yes."
    assert got[-1]["duration"] == pytest.approx(0.44 + 1.2, abs=0.03) and got[-1]["channels"] == 1
    assert dg.connections[0].keepalives == 1
