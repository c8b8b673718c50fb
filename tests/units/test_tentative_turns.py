"""The conversation layer and tentative turns: an abandoned guess leaves no trace in the history."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bridge.agents.base import Turn
from bridge.agents.conversation import ConversationAgent
from bridge.agents.scripted import ScriptedAgent


class Words:
    """A transcriber that hears the number of bytes (so a longer utterance reads differently)."""

    async def transcribe(self, pcm: bytes, rate: int = 8000) -> str:
        return f"words {len(pcm)}"


class Echo:
    def __init__(self) -> None:
        self.seen: list[Turn] = []
        self.settled: list[tuple[str, int]] = []

    async def reply(self, turn: Turn) -> AsyncIterator[str]:
        self.seen.append(turn)
        yield "ok"

    def heard(self, turn: int, text: str, interrupted: bool) -> None:
        pass

    def abandon(self, turn: int) -> None:
        self.settled.append(("abandon", turn))

    def confirm(self, turn: int) -> None:
        self.settled.append(("confirm", turn))


async def drain(agent: ConversationAgent, turn: Turn) -> list[str]:
    return [piece async for piece in agent.reply(turn) if isinstance(piece, str)]


async def test_an_abandoned_turn_is_retracted_and_the_next_one_is_recorded_once():
    inner = Echo()
    agent = ConversationAgent(inner, transcriber=Words())
    await drain(agent, Turn(1, b"\0" * 100, tentative=True))
    assert [m.content for m in agent.history.messages] == ["words 100"]
    agent.abandon(1)
    assert agent.history.messages == (), "the caller's words of an abandoned guess are taken back"
    await drain(agent, Turn(2, b"\0" * 300, tentative=True))  # the whole utterance, from its first onset
    agent.confirm(2)
    assert [m.content for m in agent.history.messages] == ["words 300"], "never the same words twice"
    assert inner.settled == [("abandon", 1), ("confirm", 2)]
    assert inner.seen[-1].tentative and inner.seen[-1].transcript == "words 300"


async def test_a_live_transcript_is_used_as_is_without_transcribing_again():
    class Refuses:
        async def transcribe(self, pcm: bytes, rate: int = 8000) -> str:
            raise AssertionError("transcribed twice")

    inner = Echo()
    agent = ConversationAgent(inner, transcriber=Refuses())
    assert await drain(agent, Turn(1, b"\0" * 100, transcript="book a table")) == ["ok"]
    assert inner.seen[0].transcript == "book a table"


async def test_the_scripted_agent_answers_with_the_line_an_abandoned_guess_did_not_use():
    agent = ScriptedAgent(["Hi.", "One.", "Two."], delay_s=0)
    first = "".join([p async for p in agent.reply(Turn(1, tentative=True)) if isinstance(p, str)])
    agent.abandon(1)
    second = "".join([p async for p in agent.reply(Turn(2)) if isinstance(p, str)])
    assert first == second == "One."
