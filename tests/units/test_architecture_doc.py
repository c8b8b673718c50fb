"""docs/architecture.md stays true to the code it walks through.

* Its reply-lifecycle table lists exactly the moves of `bridge.core.reply.TRANSITIONS`: the table
  is generated from the code (``python -m tests.units.test_architecture_doc`` prints it), and this
  test fails when the two drift apart.
* It names every event of `bridge.core.events` and every action of `bridge.core.actions`.
* Every ``bridge/...`` path and every relative link in it exists, and every ``Name.attribute``
  it names in backticks (``Call.handle``, ``TwilioCodec.decode``, ``audio.ulaw_to_pcm``) is a class
  or module of ``bridge/`` that defines that attribute, or a setting (``vad.start_ms``): a renamed
  function makes the walk a lie, and this is where that shows.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from functools import cache
from pathlib import Path

from bridge.core import actions, events
from bridge.core.reply import TRANSITIONS, Input, ReplyState
from tests.support import code_defaults

__all__ = ["reply_table"]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
TABLE_HEADING = "## The reply lifecycle"
ARROW = " → "
SEPARATOR = " · "


def reply_table() -> str:
    """The doc's table of reply moves, from `TRANSITIONS`: one row per state, its moves in table order."""
    moves: dict[ReplyState, list[tuple[Input, ReplyState]]] = defaultdict(list)
    for (state, happening), new in TRANSITIONS.items():
        moves[state].append((happening, new))
    lines = ["| state | input → next state |", "| --- | --- |"]
    for state in ReplyState:
        if state in moves:
            cell = SEPARATOR.join(f"{happening.value}{ARROW}{new.value}" for happening, new in moves[state])
            lines.append(f"| {state.value} | {cell} |")
    return "\n".join(lines)


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def doc_moves() -> set[tuple[str, str, str]]:
    """(state, input, next state) for every move the doc's table lists."""
    section = doc_text().split("\n" + TABLE_HEADING + "\n", 1)[1].split("\n## ", 1)[0]
    found: set[tuple[str, str, str]] = set()
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| state ", "| --- ")):
            continue
        state, cell = (part.strip() for part in line.strip().strip("|").split(" | "))
        for move in cell.split(SEPARATOR.strip()):
            happening, new = (part.strip() for part in move.split(ARROW.strip()))
            found.add((state, happening, new))
    return found


def test_the_reply_table_lists_exactly_the_moves_of_the_code() -> None:
    code = {(state.value, happening.value, new.value) for (state, happening), new in TRANSITIONS.items()}
    assert doc_moves() == code, "regenerate the table: python -m tests.units.test_architecture_doc"


def _dataclasses(module: object) -> set[str]:
    """The names in ``module.__all__`` that are classes (the unions like ``Action`` are not)."""
    return {name for name in module.__all__ if isinstance(getattr(module, name), type)}  # type: ignore[attr-defined]


def test_every_event_and_action_is_named() -> None:
    text = doc_text()
    names = _dataclasses(events) | _dataclasses(actions)
    assert len(names) > 20  # the check itself sees them
    missing = sorted(name for name in names if f"`{name}`" not in text and f"`{name}(" not in text)
    assert not missing, f"docs/architecture.md does not name {missing}"


def test_every_path_and_link_exists() -> None:
    text = doc_text()
    paths = set(re.findall(r"`((?:bridge|tests|bench)/[\w./-]*)`", text))
    links = {target for target in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in target}
    assert paths and links
    missing = sorted(p for p in paths if not (REPO / p).exists())
    missing += sorted(t for t in links if not (DOC.parent / t).exists())
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


@cache
def _definitions() -> dict[str, set[str]]:
    """Every class and module of ``bridge/`` by its short name, with the names it defines."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in (REPO / "bridge").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[path.stem].update(_defined(tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found[node.name].update(_defined(node.body))
    return found


def _defined(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def named_attributes() -> set[tuple[str, str]]:
    """(owner, attribute) for every ``Owner.attribute`` or ``Owner.attribute()`` in backticks,
    but file names (``call.py``) and the standard objects the shell drives (`EXTERNAL`)."""
    found = set()
    for owner, attribute in re.findall(r"`([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\(\))?`", doc_text()):
        if owner not in EXTERNAL and attribute != "py":
            found.add((owner, attribute))
    return found


EXTERNAL = frozenset({"bridge", "loop", "websocket"})
"""Owners that are not bridge's: ``loop.call_at`` (asyncio), ``websocket.receive`` (Starlette)."""


def test_every_named_function_and_setting_exists() -> None:
    named = named_attributes()
    assert ("Call", "handle") in named and ("vad", "start_ms") in named  # the check itself reads the page
    definitions = _definitions()
    settings = {f"{section}.{key}" for section, key in code_defaults()}
    missing = sorted(f"{owner}.{attribute}" for owner, attribute in named
                     if attribute not in definitions.get(owner, set()) and f"{owner}.{attribute}" not in settings)
    assert not missing, f"docs/architecture.md names what bridge/ does not define: {missing}"


def _module_file(parts: list[str]) -> Path | None:
    base = REPO.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def test_every_dotted_bridge_name_exists() -> None:
    dotted = set(re.findall(r"`(bridge(?:\.\w+)+)`", doc_text()))
    assert dotted
    missing = []
    for name in sorted(dotted):
        parts = name.split(".")
        module = _module_file(parts)
        if module is None:  # else a name defined in a module: bridge.core.reply.TRANSITIONS
            owner = _module_file(parts[:-1])
            defined = _defined(ast.parse(owner.read_text(encoding="utf-8")).body) if owner else set()
            if parts[-1] not in defined:
                missing.append(name)
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


if __name__ == "__main__":
    print(reply_table())
