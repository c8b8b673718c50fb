"""An OpenAI-compatible agent: speech-to-text, then a streamed chat completion.

One API family covers the cloud and self-hosted setups: OpenAI, Groq, and local servers
(Ollama, vLLM, llama.cpp, faster-whisper servers) all answer ``POST {base}/audio/transcriptions``
(multipart upload, JSON ``{"text": ...}`` back) and ``POST {base}/chat/completions`` with
``"stream": true`` (server-sent events: ``data: {json}`` lines, each with
``choices[0].delta.content``, ending with ``data: [DONE]``). Text is yielded the moment each
delta arrives, so the core sends the first sentence to the TTS while the model is still writing
the rest; a barge-in cancels the reading task, which closes the request.

The model is offered two tools (`bridge.agents.tools`): ``end_call`` and ``transfer_call``. A call
it makes (``delta.tool_calls``, finish reason ``tool_calls``) becomes a `HangUp` or `Transfer`
after the text it streamed; a transfer to a number that is not allowed is answered with a ``tool``
message saying so, and the model's next words are streamed in the same reply.
"""

from __future__ import annotations

import io
import logging
import time
import wave
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from bridge.agents.base import AgentError, CallControl, Message, Turn
from bridge.agents.http import check_response, json_value, new_client
from bridge.agents.memory import INTERRUPTED
from bridge.agents.tools import TOOLS, ToolCall, ToolCalls, TransferPolicy, control_of

__all__ = [
    "MARKER_NOTE", "OpenAIAgent", "OpenAITranscriber", "SseParser", "chat_messages", "chunk_parts", "delta_text",
    "wav_bytes",
]

log = logging.getLogger("bridge.agents.openai")

MARKER_NOTE = (
    f"When one of your earlier replies ends with '{INTERRUPTED.strip('… ')}', the caller cut you off "
    "there and heard only the words before it."
)


def wav_bytes(pcm: bytes, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV file holding ``pcm``: what transcription endpoints accept everywhere."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) // 2 * 2])
    return out.getvalue()


class SseParser:
    """Server-sent events, line by line: ``feed`` returns an event's data when a blank line ends it."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r")
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        if line.startswith(":"):
            return None  # a comment (servers send these as keep-alives)
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def chunk_parts(data: str) -> tuple[str, list[Any]] | None:
    """One chat-completion chunk's text ("" if none) and tool-call fragments; None at ``[DONE]``."""
    if data.strip() == "[DONE]":
        return None
    chunk = json_value(data, "chat stream: a chunk")
    if not isinstance(chunk, Mapping):
        raise AgentError("chat stream: a chunk that is not a JSON object")
    if isinstance(chunk.get("error"), Mapping):
        code = chunk["error"].get("type") or chunk["error"].get("code") or "error"
        raise AgentError(f"chat stream: the server reported an error ({str(code)[:80]})")
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return "", []
    delta = choices[0].get("delta")
    if not isinstance(delta, Mapping):
        return "", []
    content, calls = delta.get("content"), delta.get("tool_calls")
    return (content if isinstance(content, str) else ""), (calls if isinstance(calls, list) else [])


def delta_text(data: str) -> str | None:
    """The text in one chat-completion chunk ("" for a chunk without text); None at ``[DONE]``."""
    parts = chunk_parts(data)
    return None if parts is None else parts[0]


def chat_messages(system_prompt: str, history: tuple[Message, ...]) -> list[dict[str, str]]:
    """The ``messages`` of a chat request: the system prompt (with the interruption note), then the call."""
    system = f"{system_prompt.strip()}\n\n{MARKER_NOTE}".strip()
    return [{"role": "system", "content": system}] + [{"role": m.role, "content": m.content} for m in history]


class _Endpoint:
    """Base URL, key and the call's HTTP client, shared by the transcriber and the chat agent."""

    def __init__(self, base_url: str, api_key: str | None, client: httpx.AsyncClient | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client
        self._own_client = client is None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = new_client()
        return self._client

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None


class OpenAITranscriber(_Endpoint):
    """``POST {base}/audio/transcriptions`` with the utterance as a WAV file."""

    def __init__(self, base_url: str, api_key: str | None, model: str, *, language: str | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, api_key, client)
        self.model = model
        self.language = language

    async def transcribe(self, pcm: bytes, rate: int = 8000) -> str:
        """The words in ``pcm``, sent at the call's ``rate`` (a 16 kHz call's audio stays wideband)."""
        fields = {"model": self.model, "response_format": "json"}
        if self.language:
            fields["language"] = self.language
        files = {"file": ("utterance.wav", wav_bytes(pcm, rate), "audio/wav")}
        response = await self.client.post(f"{self.base_url}/audio/transcriptions", data=fields, files=files,
                                          headers=self._headers)
        await check_response(response, "transcription")
        try:
            text = response.json().get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise AgentError("transcription: the answer has no 'text'")
        return text


class OpenAIAgent(_Endpoint):
    """Streams each reply from ``POST {base}/chat/completions``; the history comes with the turn."""

    def __init__(self, base_url: str, api_key: str | None, model: str, system_prompt: str, *,
                 client: httpx.AsyncClient | None = None, extra: Mapping[str, Any] | None = None,
                 tools: bool = True, transfers: TransferPolicy | None = None) -> None:
        super().__init__(base_url, api_key, client)
        self.model = model
        self.system_prompt = system_prompt
        self.extra = dict(extra or {})
        self.tools = tools
        self.transfers = transfers or TransferPolicy()

    async def reply(self, turn: Turn) -> AsyncIterator[str | CallControl]:
        messages: list[dict[str, Any]] = list(chat_messages(self.system_prompt, turn.history))
        for _ in range(MAX_TOOL_ROUNDS):
            calls, said = ToolCalls(), []
            async for text in self._stream(turn, messages, calls):
                said.append(text)
                yield text
            finished = calls.finished()
            if not finished:
                return
            refusals: list[tuple[ToolCall, str]] = []
            for call in finished:
                outcome = control_of(call, self.transfers)
                if not isinstance(outcome, str):
                    log.info("turn %d: the model asked to %s", turn.number, call.name)
                    yield outcome
                    return
                log.warning("turn %d: refused the model's %s: %s", turn.number, call.name, outcome)
                refusals.append((call, outcome))
            messages += _tool_exchange("".join(said), refusals)

    async def _stream(self, turn: Turn, messages: list[dict[str, Any]], calls: ToolCalls) -> AsyncIterator[str]:
        """One streamed completion: its text as it comes; tool-call fragments go into ``calls``."""
        body = {**self.extra, "model": self.model, "stream": True, "messages": messages}
        if self.tools:
            body["tools"] = TOOLS
        started = time.monotonic()
        async with self.client.stream("POST", f"{self.base_url}/chat/completions", json=body,
                                      headers=self._headers) as response:
            await check_response(response, "chat completion")
            parser, first = SseParser(), True
            async for line in response.aiter_lines():
                data = parser.feed(line)
                if data is None:
                    continue
                parts = chunk_parts(data)
                if parts is None:
                    return
                text, fragments = parts
                calls.feed(fragments)
                if text:
                    if first:
                        first = False
                        log.info("turn %d: first token after %.0f ms (%s)", turn.number,
                                 (time.monotonic() - started) * 1000, self.model)
                    yield text

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        """Nothing to do: the conversation layer keeps the history and sends it with each turn."""


MAX_TOOL_ROUNDS = 3  # a model that keeps asking for refused tools still ends its reply


def _tool_exchange(said: str, refusals: list[tuple[ToolCall, str]]) -> list[dict[str, Any]]:
    """The assistant's tool calls and our answers to them, for the model's next round."""
    calls = [{"id": call.id or f"call_{n}", "type": "function",
              "function": {"name": call.name, "arguments": call.arguments or "{}"}}
             for n, (call, _) in enumerate(refusals)]
    answers = [{"role": "tool", "tool_call_id": c["id"], "content": why} for c, (_, why) in zip(calls, refusals,
                                                                                                  strict=True)]
    return [{"role": "assistant", "content": said or None, "tool_calls": calls}, *answers]
