"""The allowed values of the core's settings, written once, as plain data beside each default.

A setting's default and its range belong together, and both belong to the part that uses them.
So the core's config dataclasses (``VadConfig``, ``BargeInConfig``, ``EchoConfig``) declare each
field with `within` or `one_of`, which put the rule in the field's metadata; ``bridge.config``
reads defaults and rules from there (``dataclasses.fields``) and checks every value once, at
start-up, with an error that names the setting. Booleans need no rule. Nothing here validates:
the metadata is data for whoever loads settings.

`PLAYBACK` holds the ranges of ``CallSettings``' playback fields (``lead_ms``, ``low_ms``,
``mark_every_ms``, ``message_ms``), whose defaults stay on ``CallSettings`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any, Final, TypeVar

__all__ = ["CHOICES", "HI", "LO", "PLAYBACK", "one_of", "within"]

LO: Final = "lo"
HI: Final = "hi"
CHOICES: Final = "choices"

_T = TypeVar("_T", int, float)

PLAYBACK: Final[Mapping[str, tuple[int, int]]] = {
    "lead_ms": (20, 10_000),  # at least one 20 ms frame queued at the carrier
    "low_ms": (0, 10_000),
    "mark_every_ms": (20, 60_000),
    "message_ms": (20, 10_000),  # a whole number of 20 ms frames; one frame per message at the least
}


def within(default: _T, lo: _T, hi: _T) -> _T:
    """A dataclass field: ``default``, and any value from ``lo`` to ``hi`` (both included)."""
    assert lo <= default <= hi, "a default outside its own range"
    meta: dict[str, Any] = {LO: lo, HI: hi}
    return field(default=default, metadata=meta)


def one_of(default: _T, *choices: _T) -> _T:
    """A dataclass field: ``default``, and only the listed values."""
    assert default in choices, "a default outside its own choices"
    meta: dict[str, Any] = {CHOICES: choices}
    return field(default=default, metadata=meta)
