"""The multi-context WebSocket behaviour of ElevenLabs' API: one connection's context table.

Driven by parsed client messages and the time they arrived; it answers with a :class:`Failure`
where the real server would end the socket, and otherwise only changes state (the connection
runner voices whatever became ``pending``). Behaviour follows ``shared/protocols.md`` §1.

Choices where protocols.md says [U] (documented here because tests rely on them):

* Bad or missing ``xi-api-key``: the handshake succeeds, then the server sends
  ``{"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}`` and closes 1008.
* A context idle for ``inactivity_timeout`` is closed by the server like ``close_context``,
  except that text it still held *unflushed* is discarded; audio already triggered finishes,
  then ``isFinal`` is sent and the id is listed in ``timed_out``. If the whole socket saw no
  message for that long, the socket-level ``input_timeout_exceeded`` error wins instead.
* ``close_socket`` finishes work that was already triggered (flushed or past a schedule step),
  discards unflushed text, sends every ``isFinal`` and closes 1000.
* ``flush`` restarts the ``chunk_length_schedule`` at its first step.
* Messages for a context that is closed but still draining are ignored (and recorded as a
  violation); once its ``isFinal`` is out, the id may be reused for a new, unrelated context.
* A ``voice_settings`` for an already open id is rejected with ``invalid_input_message`` 1008.
* A message without ``context_id`` other than the ``{"text": ""}`` keep-alive is ignored.
* An unsupported or missing ``output_format`` (the fake only makes ``ulaw_8000`` and ``pcm_*``)
  or a malformed query value gets an ``invalid_request`` error frame and 1008.
* Every audio chunk carries ``alignment`` and ``normalizedAlignment`` (identical) only when
  ``sync_alignment=true``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bridge.testing.fake_elevenlabs.context import DEFAULT_SCHEDULE, FakeContext

__all__ = [
    "DEFAULT_INACTIVITY_S",
    "INVALID_KEY_FRAME",
    "MAX_CONTEXTS",
    "SAMPLE_RATES",
    "Failure",
    "MultiContextSession",
    "SessionParams",
    "describe",
    "error_frame",
    "parse_query",
]

MAX_CONTEXTS = 5
DEFAULT_INACTIVITY_S = 20.0
MAX_INACTIVITY_S = 180.0
SAMPLE_RATES: dict[str, int] = {
    "ulaw_8000": 8000,
    "pcm_8000": 8000,
    "pcm_16000": 16000,
    "pcm_22050": 22050,
    "pcm_24000": 24000,
    "pcm_44100": 44100,
}
MAX_CONTEXTS_MESSAGE = (
    "Maximum simultaneous contexts per WebSocket connection exceeded (5). "
    "Please close an existing context before opening a new one."
)
INVALID_KEY_FRAME: dict[str, Any] = {"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}
SETTINGS_FIELDS = ("voice_settings", "generation_config", "pronunciation_dictionary_locators")


@dataclass(frozen=True)
class SessionParams:
    """What one connection asked for in its query string, plus the fake's knobs that shape it."""

    output_format: str = "ulaw_8000"
    sync_alignment: bool = False
    auto_mode: bool = False
    inactivity_timeout: float = DEFAULT_INACTIVITY_S  # effective seconds, already scaled
    close_race_s: float = 0.0
    seed: int = 0
    tone_hz: float = 400.0  # the first context's tone; each next one 150 Hz higher

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATES[self.output_format]


@dataclass(frozen=True)
class Failure:
    """How the server ends a socket: send ``frame`` (unless empty), then close with ``code``.

    Mostly a failure (1008 with an error frame), but also the clean 1000 after ``close_socket``
    and the bare close of :meth:`FakeElevenLabs.drop_all`, so every ending takes the same path.
    """

    frame: dict[str, Any]
    code: int = 1008
    close_text: str | None = None  # the close frame's reason; defaults to the error code

    @property
    def error(self) -> str | None:
        return str(self.frame["error"]) if "error" in self.frame else None

    @property
    def reason(self) -> str:
        return self.close_text if self.close_text is not None else self.error or ""


def error_frame(error: str, message: str) -> dict[str, Any]:
    """The observed error shape (§1.5)."""
    return {"message": message, "error": error, "code": 1008}



class MultiContextSession:
    """The context table of one connection, driven by parsed client messages.

    ``receive`` and ``expire`` return a :class:`Failure` when the real server would close the
    socket; otherwise they only change state, and the I/O layer voices whatever is ``pending``.
    """

    def __init__(self, params: SessionParams, now: float) -> None:
        self.params = params
        self.active: dict[str, FakeContext] = {}  # open or draining: each holds a slot
        self.history: list[FakeContext] = []  # every context ever opened, in order
        self.violations: list[str] = []
        self.timed_out: list[str] = []
        self.max_open = 0
        self.closing = False  # close_socket received
        self.last_message_at = now

    # -- inbound ------------------------------------------------------------------------------

    def receive(self, message: Any, now: float) -> Failure | None:
        self.last_message_at = now
        if not isinstance(message, dict):
            self.violations.append("message is not a JSON object")
            return Failure(error_frame("invalid_input_message", "Invalid message: expected a JSON object."))
        if self.closing:
            self.violations.append(f"message after close_socket ignored: {sorted(message)}")
            return None
        if message.get("close_socket") is True:
            self._close_socket(now)
            return None
        problem = self._shape_problem(message)
        if problem:
            self.violations.append(problem)
            return Failure(error_frame("invalid_input_message", problem))
        context_id = message.get("context_id", message.get("contextId"))
        if context_id is None:
            self._contextless(message)
            return None
        return self._for_context(context_id, message, now)

    def _shape_problem(self, message: dict[str, Any]) -> str | None:
        if "text" in message and not isinstance(message["text"], str):
            return "Invalid message: 'text' must be a string."
        if "contextId" in message and "context_id" not in message:
            self.violations.append("client sent camelCase 'contextId'; send 'context_id'")
        context_id = message.get("context_id", message.get("contextId"))
        if context_id is not None and (not isinstance(context_id, str) or not context_id):
            return "Invalid message: 'context_id' must be a non-empty string."
        return None

    def _contextless(self, message: dict[str, Any]) -> None:
        """``{"text": ""}`` keeps the socket alive; anything else without an id is ignored."""
        if message.get("text") == "" and set(message) == {"text"}:
            return
        self.violations.append(f"message without context_id ignored: {sorted(message)}")

    def _for_context(self, context_id: str, message: dict[str, Any], now: float) -> Failure | None:
        ctx = self.active.get(context_id)
        if ctx is None:
            if len(self.active) >= MAX_CONTEXTS:
                self.violations.append(f"sixth context {context_id!r} while {MAX_CONTEXTS} hold slots")
                return Failure(error_frame("max_active_conversations", MAX_CONTEXTS_MESSAGE))
            ctx = self._open(context_id, message, now)
        elif ctx.closed:
            self.violations.append(f"message for context {context_id!r} after its close ignored")
            return None
        else:
            failure = self._check_reinit(ctx, message)
            if failure:
                return failure
        self._apply(ctx, message, now)
        return None

    def _open(self, context_id: str, message: dict[str, Any], now: float) -> FakeContext:
        text = message.get("text")
        implicit = not text  # a keep-alive, flush or close for an id nobody initialised
        ctx = FakeContext(
            context_id=context_id,
            index=len(self.history),
            opened_at=now,
            implicit=implicit,
            rng=random.Random(f"{self.params.seed}:{len(self.history)}"),
            voice_settings=message.get("voice_settings"),
            generation_config=message.get("generation_config"),
            schedule=self._schedule_of(message.get("generation_config")),
            last_input=now,
            tone_hz=self.params.tone_hz,
        )
        if implicit:
            self.violations.append(f"context {context_id!r} opened implicitly by {describe(message)}")
        self.active[context_id] = ctx
        self.history.append(ctx)
        self.max_open = max(self.max_open, len(self.active))
        return ctx

    def _schedule_of(self, config: Any) -> tuple[int, ...]:
        schedule = config.get("chunk_length_schedule") if isinstance(config, dict) else None
        if schedule is None:
            return DEFAULT_SCHEDULE
        if (
            isinstance(schedule, list)
            and schedule
            and all(isinstance(n, int) and 50 <= n <= 500 for n in schedule)
        ):
            return tuple(schedule)
        self.violations.append(f"chunk_length_schedule {schedule!r} invalid (items 50 to 500); default used")
        return DEFAULT_SCHEDULE

    def _check_reinit(self, ctx: FakeContext, message: dict[str, Any]) -> Failure | None:
        """Settings belong to a context's first message; a late ``voice_settings`` is fatal (§1.3)."""
        late = [name for name in SETTINGS_FIELDS if name in message]
        if not late:
            return None
        how = "implicitly opened" if ctx.implicit else "already initialised"
        self.violations.append(f"{', '.join(late)} sent for {how} context {ctx.context_id!r}")
        if "voice_settings" not in message:
            return None
        return Failure(
            error_frame(
                "invalid_input_message",
                f"voice_settings can only be sent in the first message of context {ctx.context_id!r}.",
            )
        )

    def _apply(self, ctx: FakeContext, message: dict[str, Any], now: float) -> None:
        ctx.last_input = now
        text = message.get("text")
        if text:
            if not text.endswith(" "):
                self.violations.append(
                    f"text for {ctx.context_id!r} does not end with a space: {text[-20:]!r}"
                )
            ctx.add_text(text, now, self.params.auto_mode)
        if message.get("flush") is True:
            ctx.flush(now)
        if message.get("close_context") is True:
            self._close_context(ctx, now)

    def _close_context(self, ctx: FakeContext, now: float) -> None:
        if self._is_race(ctx, now):
            ctx.drop_everything()
        ctx.close("close_context", now, keep_buffer=True)

    def _is_race(self, ctx: FakeContext, now: float) -> bool:
        """§1.6.4: a close right behind the text, before any audio of the context was made."""
        window = self.params.close_race_s
        return (
            window > 0
            and not ctx.streaming_started
            and ctx.last_text_at is not None
            and now - ctx.last_text_at <= window
            and bool(ctx.pending or ctx.buffer.strip())
        )

    def _close_socket(self, now: float) -> None:
        self.closing = True
        for ctx in self.active.values():
            if not ctx.closed:
                ctx.close("close_socket", now, keep_buffer=False)

    # -- time ---------------------------------------------------------------------------------

    def expire(self, now: float) -> Failure | None:
        """Apply the inactivity timeout: to the whole socket first, then to each open context."""
        if self.closing:
            return None
        limit = self.params.inactivity_timeout
        if now - self.last_message_at >= limit:
            self.violations.append(f"socket idle for {limit:g} s")
            return Failure(
                error_frame(
                    "input_timeout_exceeded",
                    f"Have not received a new text input within the timeout of {limit:g} seconds. "
                    "Please send a new message to avoid closing the connection.",
                )
            )
        for ctx in self.active.values():
            if not ctx.closed and now - ctx.last_input >= limit:
                ctx.close("inactivity", now, keep_buffer=False)
                self.timed_out.append(ctx.context_id)
        return None

    # -- outbound bookkeeping -----------------------------------------------------------------

    def finish(self, ctx: FakeContext) -> None:
        """Its ``isFinal`` is out: the slot is free and the id may be reused."""
        ctx.final_sent = True
        if self.active.get(ctx.context_id) is ctx:
            del self.active[ctx.context_id]

    @property
    def drained(self) -> bool:
        return self.closing and not self.active

    def find(self, context_id: str) -> FakeContext | None:
        """The latest context that had this id."""
        return next((c for c in reversed(self.history) if c.context_id == context_id), None)


def describe(message: dict[str, Any]) -> str:
    if message.get("close_context") is True:
        return "a close_context"
    if message.get("flush") is True:
        return "a flush"
    if message.get("text") == "":
        return "a keep-alive"
    return f"a message with keys {sorted(message)}"


def _parse_bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return lowered == "true"


def parse_query(
    query: dict[str, str], *, timeout_scale: float = 1.0, close_race_ms: float = 0.0, seed: int = 0
) -> SessionParams:
    """The connection's parameters; raises ``ValueError`` for what the fake refuses to serve."""
    output_format = query.get("output_format")
    if output_format not in SAMPLE_RATES:
        raise ValueError(
            f"output_format {output_format or 'mp3_44100_128 (default)'} is not served by the fake; "
            f"use one of {', '.join(SAMPLE_RATES)}"
        )
    timeout = float(query.get("inactivity_timeout", DEFAULT_INACTIVITY_S))
    if not 0 < timeout <= MAX_INACTIVITY_S:
        raise ValueError(f"inactivity_timeout must be in (0, 180], got {timeout:g}")
    return SessionParams(
        output_format=output_format,
        sync_alignment=_parse_bool(query.get("sync_alignment", "false"), "sync_alignment"),
        auto_mode=_parse_bool(query.get("auto_mode", "false"), "auto_mode"),
        inactivity_timeout=timeout * timeout_scale,
        close_race_s=close_race_ms / 1000,
        seed=seed,
    )

