"""Third-party agents by dotted path: ``BRIDGE_AGENT=package.module:factory``.

``factory(settings)`` is called once per call with the bridge's `Settings` and returns an
`Agent` (an object with ``reply(turn)`` as an async iterator of text, and ``heard``). The bridge
wraps it like its own agents, so it gets transcripts (when ``[agent] stt`` asks for them) and the
heard-text history in each `Turn`. The path is resolved when settings load, so a typo stops
start-up with one line instead of failing every call.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

__all__ = ["DOTTED_PATH", "is_dotted_path", "load_factory"]

DOTTED_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"


def is_dotted_path(value: str) -> bool:
    return re.fullmatch(DOTTED_PATH, value) is not None


def load_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``module:attribute``; ValueError (one line, the reason) otherwise."""
    if not is_dotted_path(spec):
        raise ValueError("not of the form package.module:factory")
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}".replace("\n", " ")) from None
    except Exception as exc:  # the module itself failed while importing
        raise ValueError(f"importing {module_name} failed: {type(exc).__name__}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no attribute {attribute}") from None
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]
