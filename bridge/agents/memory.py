"""The conversation as the caller experienced it, for agents that send it to a language model.

Two rules make the model's memory match the call rather than its own intentions:

* An agent reply enters the history as the caller *heard* it. After a barge-in that is the heard
  prefix followed by `INTERRUPTED`, so the model knows it was cut off and never believes it said
  what the caller never heard. A reply the caller heard nothing of leaves no trace.
* Consecutive messages of one role are merged: the caller who spoke twice while the agent said
  nothing audible said one longer thing. This also keeps the roles alternating, which some chat
  templates of self-hosted models require.
"""

from __future__ import annotations

from bridge.agents.base import Message, Role

__all__ = ["INTERRUPTED", "History", "caller_text"]

INTERRUPTED = "… [interrupted by the caller]"
MAX_MESSAGES = 200  # a very long call forgets its oldest turns rather than overflow the model's context


def caller_text(transcript: str | None, digits: str) -> str:
    """What the caller said in one turn, as text for a model: the words, then any keys pressed."""
    words = (transcript or "").strip()
    if not digits:
        return words
    keys = f"[keypad: {' '.join(digits)}]"
    return f"{words} {keys}" if words else keys


class History:
    """An append-only list of `Message` that follows the two rules above."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        self._messages: list[Message] = []
        self._max = max(2, max_messages)

    @property
    def messages(self) -> tuple[Message, ...]:
        return tuple(self._messages)

    def restore(self, messages: tuple[Message, ...]) -> None:
        """Back to ``messages`` (an earlier `messages`): a tentative turn was abandoned."""
        self._messages = list(messages)

    def caller(self, text: str) -> None:
        """The caller said ``text`` (nothing happens for empty text)."""
        self._add("user", text.strip())

    def agent(self, heard: str, interrupted: bool) -> None:
        """The caller heard ``heard`` of a reply; ``interrupted``: they cut the agent off there."""
        heard = heard.strip()
        if heard and interrupted:
            heard = f"{heard} {INTERRUPTED}"
        self._add("assistant", heard)

    def _add(self, role: Role, text: str) -> None:
        if not text:
            return
        if self._messages and self._messages[-1].role == role:
            text = f"{self._messages[-1].content} {text}"
            self._messages[-1] = Message(role, text)
        else:
            self._messages.append(Message(role, text))
        if len(self._messages) > self._max:
            del self._messages[: len(self._messages) - self._max]
            if self._messages[0].role == "assistant":
                del self._messages[0]  # start on the caller's words, as a chat should
