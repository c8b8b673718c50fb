"""docs/vad-tuning.md stays true: every [vad], [barge_in] and [echo] setting has a row with the
default that `config/bridge.toml` and `bridge/config.py` give it and the values the core allows
(the range or choices on its field, ``bridge.core.limits``), the core's own defaults are the same
ones, and the page quotes the latest before/after measurement (`python -m bench.turntaking`).
When this fails after changing a turn-taking setting, update its row and re-run the benchmark."""

from __future__ import annotations

import re
from dataclasses import Field, asdict, fields
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Settings
from bridge.core.aec import AecConfig
from bridge.core.bargein import BargeInConfig
from bridge.core.call import CallSettings
from bridge.core.echo import EchoConfig
from bridge.core.limits import CHOICES, HI, LO
from bridge.core.vad import VadConfig
from bridge.server.factories import call_settings
from tests.support import code_defaults as all_defaults
from tests.support import config_toml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "vad-tuning.md"
RESULTS = REPO / "bench" / "results" / "turntaking.md"
SECTIONS = ("vad", "barge_in", "echo", "aec")
ROW = re.compile(r"^\| `(\w+)\.(\w+)` \| `([^`]*)` \|")
ALLOWED = re.compile(r"^\| `(\w+)\.(\w+)` \| `[^`]*` \| ([^|]*?) \|")
CORE = {"vad": VadConfig, "barge_in": BargeInConfig, "echo": EchoConfig, "aec": AecConfig}


def toml_defaults() -> dict[tuple[str, str], str]:
    """(section, key) -> the value as config/bridge.toml writes it, for the turn-taking sections."""
    return {name: value for name, (value, _) in config_toml().items() if name[0] in SECTIONS}


def doc_rows() -> dict[tuple[str, str], str]:
    rows: dict[tuple[str, str], str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if (match := ROW.match(line)) and match.group(1) in SECTIONS:
            name = (match.group(1), match.group(2))
            assert name not in rows, f"two rows for {name[0]}.{name[1]}"
            rows[name] = match.group(3)
    return rows


def allowed_rows() -> dict[tuple[str, str], str]:
    """(section, key) -> the "allowed" cell, without the note after a ";" (a rule across settings)."""
    return {(m.group(1), m.group(2)): m.group(3).split(";")[0] for line in DOC.read_text(encoding="utf-8").splitlines()
            if (m := ALLOWED.match(line)) and m.group(1) in SECTIONS}


def allowed(f: Field[Any]) -> str:
    """What the core lets a field be, as the page writes it."""
    if LO in f.metadata:
        return f"{f.metadata[LO]} to {f.metadata[HI]}"
    return ", ".join(map(str, f.metadata[CHOICES])) if CHOICES in f.metadata else "true, false"


def written(value: Any) -> str:
    """A default as TOML writes it."""
    if isinstance(value, str):
        return f'"{value}"'
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def code_defaults() -> dict[tuple[str, str], Any]:
    return {name: value for name, value in all_defaults().items() if name[0] in SECTIONS}


@pytest.mark.parametrize("name", list(code_defaults()), ids=[f"{s}.{k}" for s, k in code_defaults()])
def test_each_setting_has_a_row_with_its_default(name: tuple[str, str]) -> None:
    rows, toml = doc_rows(), toml_defaults()
    assert name in rows, f"docs/vad-tuning.md has no row for {name[0]}.{name[1]}"
    assert toml.get(name) == written(code_defaults()[name]), f"config/bridge.toml and bridge/config.py differ on {name}"
    assert rows[name] == toml[name], f"{name[0]}.{name[1]}: the doc says {rows[name]}, the config {toml[name]}"


@pytest.mark.parametrize("name", list(code_defaults()), ids=[f"{s}.{k}" for s, k in code_defaults()])
def test_each_row_gives_the_values_the_core_allows(name: tuple[str, str]) -> None:
    field = {f.name: f for f in fields(CORE[name[0]])}[name[1]]
    assert allowed_rows().get(name) == allowed(field), f"docs/vad-tuning.md: {name[0]}.{name[1]} takes {allowed(field)}"


def test_no_row_names_a_setting_that_does_not_exist() -> None:
    stale = sorted(doc_rows().keys() - code_defaults().keys())
    assert not stale, f"docs/vad-tuning.md documents settings that do not exist: {stale}"


@pytest.mark.parametrize("section", SECTIONS)
def test_the_core_defaults_are_the_configured_ones(section: str) -> None:
    """`CallSettings()` (tests, tools) and the server (`call_settings(Settings())`) run the same detector."""
    assert asdict(getattr(CallSettings(), section)) == asdict(getattr(call_settings(Settings()), section))


def test_the_page_quotes_the_latest_measurement() -> None:
    page = DOC.read_text(encoding="utf-8")
    missing = [line for line in RESULTS.read_text(encoding="utf-8").splitlines() if line.startswith("|")
               and line not in page]
    assert not missing, f"bench/results/turntaking.md has rows the page lacks: {missing[:3]}"


def test_the_plot_exists_and_is_small() -> None:
    for target in re.findall(r"\]\((img/[^)]+\.png)\)", DOC.read_text(encoding="utf-8")):
        path = DOC.parent / target
        assert path.is_file() and path.stat().st_size < 150_000, target
