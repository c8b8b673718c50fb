"""The shell's side of turn-taking: the end-of-turn judge off the loop, and the live transcript.

The core decides when a turn ends (``bridge.core.turns``); it asks for a verdict at each
candidate end (`JudgeTurn`). A judge is blocking CPU work (~1 ms for the heuristic, ~90 ms for the
model), so it runs in a worker thread (`asyncio.to_thread`), and not at all where its verdict could
change nothing (no words, and a judge that cannot reach `JudgeTurn.sure_audio`). Its answer comes
back through the call's inbox as a `TurnVerdict` event stamped with the candidate, like any other
input: a verdict that arrives after the caller went on is dropped by the core.

With a streaming transcriber (``BRIDGE_STT=deepgram``) the caller's audio goes to it as it arrives
(one stream per call), so the words are there when the turn ends: the judge reads them, and the
turn carries them (``Turn.transcript``), so the agent does not transcribe the audio again.
Finalised stretches since the last turn the caller got an answer for, plus the newest interim
one, are the turn's transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bridge.agents.stt.base import StreamingTranscriber, SttStream, Transcript
from bridge.core.actions import JudgeTurn
from bridge.core.events import Event, TurnVerdict
from bridge.turn.base import TurnJudge

__all__ = ["Listening"]

log = logging.getLogger("bridge.server.listening")

MAX_QUEUED = 500  # 10 s of 20 ms chunks: a stalled transcriber never grows a call's memory further


class Listening:
    """One call's judge and (optional) live transcription."""

    def __init__(self, judge: TurnJudge, stt: StreamingTranscriber | None, put: Callable[[Event], None],
                 clock: Callable[[], float], name: Callable[[], str], *, rate: int = 8000) -> None:
        """``rate``: the call's (8 or 16 kHz); the caller's audio reaches the judge and the
        transcriber at it, unconverted."""
        self.judge = judge
        self.rate = rate
        self.stt = stt
        self._put, self._clock, self._name = put, clock, name
        self._tasks: set[asyncio.Task[None]] = set()
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUED)
        self._finals: list[str] = []
        self._interim = ""
        self._stt_task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- transcription

    def start(self) -> None:
        if self.stt is not None and self._stt_task is None:
            self._stt_task = asyncio.create_task(self._transcribe(self.stt), name="stt")

    def feed(self, pcm: bytes) -> None:
        """Caller audio as it arrived; never blocks (a stalled transcriber loses audio, not the call)."""
        if self._stt_task is not None and not self._stt_task.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._audio.put_nowait(pcm)

    def transcript(self) -> str | None:
        """The words since the last answered turn (None: no transcriber)."""
        if self.stt is None:
            return None
        return " ".join(part for part in (*self._finals, self._interim) if part).strip()

    def answered(self) -> None:
        """A turn went to the agent for good: the next turn's words start afresh."""
        self._finals.clear()
        self._interim = ""

    async def _transcribe(self, stt: StreamingTranscriber) -> None:
        try:
            async with stt.stream(rate=self.rate) as stream:
                sender = asyncio.create_task(self._send(stream), name="stt-send")
                try:
                    async for item in stream.transcripts():
                        self._heard(item)
                finally:
                    sender.cancel()
                    await asyncio.gather(sender, return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call goes on without live words; the agent transcribes if it can
            log.warning("call %s: live transcription failed (%s)", self._name(), str(exc)[:200])

    async def _send(self, stream: SttStream) -> None:
        while (pcm := await self._audio.get()) is not None:
            await stream.send(pcm)
        await stream.finish()

    def _heard(self, item: Transcript) -> None:
        if item.is_final:
            if item.text.strip():
                self._finals.append(item.text.strip())
            self._interim = ""
        else:
            self._interim = item.text.strip()

    # ----------------------------------------------------------------- the judge

    def ask(self, action: JudgeTurn) -> None:
        """Judge candidate ``action.candidate`` in a thread; the verdict comes back as an event.
        Without words, a judge that cannot reach ``action.sure_audio`` is not asked: its verdict
        would leave the end where it is (the heuristic's prosody alone, at the defaults)."""
        transcript = self.transcript()
        if not transcript and self.judge.audio_most < action.sure_audio:
            return
        task = asyncio.create_task(self._judge(action, transcript), name=f"judge-{action.candidate}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _judge(self, action: JudgeTurn, transcript: str | None) -> None:
        try:
            verdict = await asyncio.to_thread(self.judge.judge, action.utterance, self.rate, transcript or None)
        except asyncio.CancelledError:
            raise
        except Exception:  # no verdict: the core ends the turn at the plain VAD silence
            log.exception("call %s: the end-of-turn judge failed", self._name())
            return
        self._put(TurnVerdict(self._clock(), action.candidate, verdict.complete_prob, verdict.wait_ms,
                              verdict.complete, text=bool(transcript)))

    async def aclose(self) -> None:
        """Nothing outlives the call: judges cancelled, the transcriber flushed and closed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stt_task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._audio.put_nowait(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._stt_task), 2.0)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._stt_task.cancel()
                await asyncio.gather(self._stt_task, return_exceptions=True)
