"""The agent's call controls: ``end_call`` and ``transfer_call`` tool calls from an OpenAI-compatible
model (streamed ``delta.tool_calls`` from ``bridge.testing.fake_openai``, a protocol-faithful local
server on 127.0.0.1), the transfer allow-list, and the scripted and webhook agents' equivalents."""

from __future__ import annotations

import json

import pytest

from bridge.agents.base import HangUp, Message, Transfer, Turn
from bridge.agents.openai import OpenAIAgent
from bridge.agents.scripted import ScriptedAgent, split_control
from bridge.agents.tools import ToolCalls, TransferPolicy
from bridge.agents.webhook import control_of_line
from bridge.testing.fake_openai import FakeOpenAI, Reply

HISTORY = (Message("assistant", "Hello!"), Message("user", "That's all, thanks. Bye!"))
ALLOWED = TransferPolicy.parse("+15550001111, +442079460000")


async def _reply(agent: OpenAIAgent) -> list[object]:
    return [piece async for piece in agent.reply(Turn(3, history=HISTORY))]


async def test_end_call_comes_after_the_goodbye_it_follows() -> None:
    async with FakeOpenAI([Reply("Goodbye, have a nice day!", tool_calls=(("end_call", {"reason": "done"}),))]) as api:
        agent = OpenAIAgent(api.base_url, None, "m", "Be brief.")
        pieces = await _reply(agent)
        await agent.aclose()
    assert "".join(p for p in pieces if isinstance(p, str)) == "Goodbye, have a nice day!"
    assert pieces[-1] == HangUp("done"), "the control comes last, after every word of the goodbye"
    names = [tool["function"]["name"] for tool in api.chats[0].body["tools"]]
    assert names == ["end_call", "transfer_call"], "the model is offered both tools"


async def test_a_transfer_to_an_allowed_number_is_passed_on() -> None:
    reply = Reply("Connecting you to our billing team.", tool_calls=(("transfer_call", {"to": "+15550001111"}),))
    async with FakeOpenAI([reply]) as api:
        agent = OpenAIAgent(api.base_url, None, "m", "", transfers=ALLOWED)
        pieces = await _reply(agent)
        await agent.aclose()
    assert pieces[-1] == Transfer("+15550001111")


async def test_a_transfer_to_any_other_number_is_refused_and_the_model_is_told() -> None:
    premium = Reply("Sure, transferring you now.", tool_calls=(("transfer_call", {"to": "+19005550123"}),))
    after = Reply("Sorry, I can't transfer you to that number. Can I help with anything else?")
    async with FakeOpenAI([premium, after]) as api:
        agent = OpenAIAgent(api.base_url, None, "m", "", transfers=ALLOWED)
        pieces = await _reply(agent)
        await agent.aclose()
    assert not any(isinstance(p, Transfer | HangUp) for p in pieces), "nothing is dialled"
    assert "".join(p for p in pieces if isinstance(p, str)).endswith("Can I help with anything else?")
    second = api.chats[1].messages
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["function"]["name"] == "transfer_call"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]
    assert "+19005550123 is not a number this line may transfer to" in second[-1]["content"]


async def test_tools_can_be_turned_off_for_servers_without_them() -> None:
    async with FakeOpenAI(["Hi."]) as api:
        agent = OpenAIAgent(api.base_url, None, "m", "", tools=False)
        await _reply(agent)
        await agent.aclose()
    assert "tools" not in api.chats[0].body


def test_streamed_tool_call_fragments_are_reassembled_by_index() -> None:
    calls = ToolCalls()
    calls.feed([{"index": 1, "id": "b", "function": {"name": "transfer_call", "arguments": '{"to": "+1'}}])
    calls.feed([{"index": 0, "id": "a", "function": {"name": "end_call", "arguments": ""}}])
    calls.feed([{"index": 1, "function": {"arguments": '5550001111"}'}}, "junk", {"index": "x"}])
    first, second = calls.finished()
    assert (first.id, first.name, first.args()) == ("a", "end_call", {})
    assert (second.name, second.args()) == ("transfer_call", {"to": "+15550001111"})


@pytest.mark.parametrize("to", ["+19005550123", "15550001111", "+1555000111a", "", "+1" + "5" * 20])
def test_the_allow_list_refuses_every_other_number(to: str) -> None:
    assert ALLOWED.refusal(to) is not None
    assert ALLOWED.refusal("+442079460000") is None


def test_a_bad_allow_list_entry_stops_start_up_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"'555-1234' is not an E\.164 number"):
        TransferPolicy.parse("+15550001111,555-1234")


async def test_script_lines_can_end_with_a_hang_up_or_a_transfer() -> None:
    assert split_control("Goodbye! [hangup]") == ("Goodbye!", HangUp("script"))
    assert split_control("One moment. [transfer +15550001111]") == ("One moment.", Transfer("+15550001111"))
    assert split_control("Just words.") == ("Just words.", None)
    agent = ScriptedAgent(["Hi.", "Thanks for calling, goodbye! [hangup]"], delay_s=0)
    pieces = [p async for p in agent.reply(Turn(1))]
    assert "".join(p for p in pieces if isinstance(p, str)) == "Thanks for calling, goodbye!"
    assert pieces[-1] == HangUp("script")


def test_webhook_lines_carry_controls() -> None:
    assert control_of_line(json.dumps({"end_call": True})) == HangUp("webhook")
    assert control_of_line(json.dumps({"text": "Bye.", "transfer": "+15550001111"})) == Transfer("+15550001111")
    assert control_of_line(json.dumps({"text": "Hi."})) is None
    assert control_of_line("not json") is None
