"""A scripted agent: the first line of a text file greets, later lines answer in turn.

It exists so the call path can be exercised end to end with no language model. It streams each
line's first sentence whole, then the rest in several small pieces, as a language model would, so
the text streaming and sentence flushing of the core are exercised too.

A line may end with a call control: ``Goodbye! [hangup]`` ends the call once the goodbye has been
heard; ``Connecting you now. [transfer +15551234567]`` hands the caller to that number (which must
also be on the transfer allow-list).

A demo script ships inside the package (``default_script.txt``, read with `importlib.resources`),
so an installed bridge answers calls from any working directory with no file of its own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path

from bridge.agents.base import CallControl, HangUp, Transfer, Turn

__all__ = ["ScriptedAgent", "default_script", "load_script", "split_control"]

_CONTROL = re.compile(r"\s*\[(hangup|transfer\s+(\S+))\]\s*$", re.IGNORECASE)


def default_script() -> Path:
    """Where the demo script shipped with the package is.

    A regular install (wheel, sdist, editable) unpacks package data into the file system, so the
    resource is a real file whose path can be logged and read like any script a user names."""
    return Path(str(resources.files("bridge.agents").joinpath("default_script.txt")))


def load_script(path: str | Path | None = None) -> list[str]:
    """The non-empty lines of a UTF-8 script file (``None``: the demo script shipped with bridge)."""
    lines = Path(path or default_script()).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip()]


def split_control(line: str) -> tuple[str, CallControl | None]:
    """A script line's words and the call control its end names, if any."""
    match = _CONTROL.search(line)
    if match is None:
        return line, None
    control: CallControl = Transfer(match.group(2)) if match.group(2) else HangUp("script")
    return line[: match.start()].strip(), control


class ScriptedAgent:
    def __init__(self, lines: Sequence[str], *, words_per_piece: int = 3, delay_s: float = 0.01,
                 idle_prompt: str = "Are you still there?") -> None:
        """``idle_prompt`` is said on an idle turn (the caller has been silent), without using a line."""
        if not lines:
            raise ValueError("a script needs at least a greeting line")
        self._lines = list(lines)
        self._words_per_piece = max(1, words_per_piece)
        self._delay_s = delay_s
        self._idle_prompt = idle_prompt
        self.history: list[tuple[int, str, bool]] = []
        self._abandoned = 0  # tentative turns the caller talked through: they take no line

    def abandon(self, turn: int) -> None:
        """A tentative turn was never heard: its line answers the next turn instead."""
        self._abandoned += 1

    def line_for(self, turn: int) -> str:
        if turn == 0 or len(self._lines) == 1:
            return self._lines[0]
        replies = self._lines[1:]
        return replies[(turn - 1) % len(replies)]

    async def reply(self, turn: Turn) -> AsyncIterator[str | CallControl]:
        line, control = split_control(self._idle_prompt if turn.idle else self.line_for(turn.number - self._abandoned))
        for piece in self.pieces(line):
            yield piece
            await asyncio.sleep(self._delay_s)
        if control is not None:
            yield control

    def pieces(self, line: str) -> list[str]:
        """The first sentence whole, then the rest a few words at a time.

        The first sentence is what the caller waits for: in one piece, the TTS gets it (and its
        flush) the moment the reply's context opens, as from a model that streams whole sentences,
        instead of ~10 ms later per few words. The rest still streams, so text streaming and
        sentence flushing downstream are exercised."""
        words = line.split()
        head = next((i + 1 for i, word in enumerate(words) if word.endswith((".", "!", "?"))), len(words))
        step = self._words_per_piece
        groups = [words[:head], *(words[i : i + step] for i in range(head, len(words), step))]
        pieces = [" ".join(group) for group in groups if group]
        return [piece + " " for piece in pieces[:-1]] + pieces[-1:]

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        self.history.append((turn, text, interrupted))
