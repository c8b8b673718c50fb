"""The tools a language model may call to run the call: ``end_call`` and ``transfer_call``.

The model only asks; the bridge decides. ``transfer_call`` dials nothing unless the number is on
the operator's allow-list (``BRIDGE_TRANSFER_NUMBERS``), so a caller who talks the model into
"transferring" them to a premium-rate number gets a polite refusal, and the model is told why in a
``tool`` message so it can say so. Tool calls arrive in streamed pieces (OpenAI's
``choices[0].delta.tool_calls``: an ``index``, then the ``id`` and ``function.name`` once, then the
JSON ``function.arguments`` in fragments); `ToolCalls` puts them back together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.agents.base import CallControl, HangUp, Transfer
from bridge.core.numbers import E164

__all__ = ["E164", "TOOLS", "ToolCall", "ToolCalls", "TransferPolicy", "control_of"]


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Hang up the phone call. First say a short goodbye in the same reply; the call ends "
                           "once the caller has heard it. Use when the caller is done or asks to end the call.",
            "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "transfer_call",
            "description": "Transfer the caller to a person at a phone number in E.164 form (e.g. +15551234567). "
                           "First tell the caller you are transferring them.",
            "parameters": {
                "type": "object",
                "properties": {"to": {"type": "string", "description": "E.164 phone number"}},
                "required": ["to"],
            },
        },
    },
]


@dataclass
class ToolCall:
    """One tool call, as the model finished streaming it."""

    id: str = ""
    name: str = ""
    arguments: str = ""

    def args(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class ToolCalls:
    """Streamed ``delta.tool_calls`` fragments, merged by their ``index``."""

    calls: dict[int, ToolCall] = field(default_factory=dict)

    def feed(self, fragments: Iterable[Any]) -> None:
        for fragment in fragments:
            if not isinstance(fragment, Mapping):
                continue
            index = fragment.get("index", 0)
            call = self.calls.setdefault(index if isinstance(index, int) else 0, ToolCall())
            if isinstance(fragment.get("id"), str):
                call.id = fragment["id"]
            function = fragment.get("function")
            if isinstance(function, Mapping):
                if isinstance(function.get("name"), str):
                    call.name += function["name"]
                if isinstance(function.get("arguments"), str):
                    call.arguments += function["arguments"]

    def finished(self) -> list[ToolCall]:
        return [self.calls[i] for i in sorted(self.calls)]


@dataclass(frozen=True, slots=True)
class TransferPolicy:
    """The numbers a transfer may dial: nothing else, however the model is asked."""

    allowed: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, numbers: str) -> TransferPolicy:
        """From ``BRIDGE_TRANSFER_NUMBERS``: comma-separated E.164 numbers (ValueError names a bad one)."""
        allowed = {n.strip() for n in numbers.split(",") if n.strip()}
        for number in allowed:
            if not E164.match(number):
                raise ValueError(f"{number!r} is not an E.164 number (+ and 7 to 15 digits)")
        return cls(frozenset(allowed))

    def refusal(self, to: str) -> str | None:
        """Why ``to`` may not be dialled, for the model to relay; None when it may."""
        if not E164.match(to):
            return f"'{to[:32]}' is not a phone number in E.164 form; nothing was dialled."
        if to not in self.allowed:
            return (f"{to} is not a number this line may transfer to; nothing was dialled. Tell the caller "
                    "you cannot transfer them there and carry on helping them.")
        return None


def control_of(call: ToolCall, policy: TransferPolicy) -> CallControl | str:
    """The control a finished tool call asks for, or the refusal text to send back to the model."""
    args = call.args()
    if call.name == "end_call":
        reason = args.get("reason")
        return HangUp(reason if isinstance(reason, str) else "")
    if call.name == "transfer_call":
        to = args.get("to")
        to = to.strip() if isinstance(to, str) else ""
        refusal = policy.refusal(to)
        return Transfer(to) if refusal is None else refusal
    return f"There is no tool named '{call.name[:40]}'; nothing was done."
