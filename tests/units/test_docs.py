"""The docs stay true: every setting has one row in docs/configuration.md, with the env var and
the default that `config/bridge.toml` and `bridge/config.py` give it, and no row names a setting
that does not exist. When this fails after adding a setting, add its row to the table. The README's
shorter table of the main settings agrees with that one.

Likewise every Prometheus metric bridge/server/metrics.py defines has a row, with its type, in
docs/scaling.md, and the page names no metric that does not exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from bridge.server import metrics
from tests.support import code_defaults, config_toml

REPO = Path(__file__).resolve().parents[2]
CONFIG_DOC = REPO / "docs" / "configuration.md"
README = REPO / "README.md"
SCALING_DOC = REPO / "docs" / "scaling.md"
LONG = 60  # a default longer than this may read "long text, see `config/bridge.toml`"


def doc_rows() -> dict[tuple[str, str], dict[str, str]]:
    """The rows of the table under "## Settings", keyed by (section, key); duplicates fail."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    body = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for line in body.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, f"a settings row needs 5 cells (no '|' inside one): {line}"
        section, key, env, default, meaning = cells
        name = (section.strip("`"), key.strip("`"))
        assert name not in rows, f"two rows for [{name[0]}] {name[1]}"
        rows[name] = {"env": env.strip("`"), "default": default, "meaning": meaning}
    return rows


def toml_settings() -> dict[tuple[str, str], str]:
    """Every key config/bridge.toml lists, set or commented out, with the env var it names."""
    return {name: env for name, (_, env) in config_toml().items()}


def shown(value: Any) -> str:
    """A default as the table writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def test_every_setting_in_the_code_has_a_row() -> None:
    missing = sorted(code_defaults().keys() - doc_rows().keys())
    assert not missing, f"docs/configuration.md has no row for {', '.join(f'[{s}] {k}' for s, k in missing)}"


def test_every_key_in_the_toml_file_has_a_row_with_its_env_var() -> None:
    rows = doc_rows()
    for (section, key), env in toml_settings().items():
        assert (section, key) in rows, f"docs/configuration.md has no row for [{section}] {key}"
        assert rows[(section, key)]["env"] == env, f"[{section}] {key}: the toml file says {env}"


def test_no_row_names_a_setting_that_does_not_exist() -> None:
    stale = sorted(doc_rows().keys() - code_defaults().keys())
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"


@pytest.mark.parametrize(("name", "default"), list(code_defaults().items()),
                         ids=[f"{section}.{key}" for section, key in code_defaults()])
def test_each_row_gives_the_real_default(name: tuple[str, str], default: Any) -> None:
    row = doc_rows().get(name)
    if row is None:
        pytest.fail(f"docs/configuration.md has no row for [{name[0]}] {name[1]}")
    if len(str(default)) > LONG and "config/bridge.toml" in row["default"]:
        return
    assert row["default"] == shown(default)
    assert row["meaning"], "say what it means"


def readme_rows() -> dict[tuple[str, str], dict[str, str]]:
    """The rows of the README's table under "## Configuration": `section.key` | env | default | meaning."""
    body = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for line in body.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 4, f"a README settings row needs 4 cells, one setting each: {line}"
            section, _, key = cells[0].strip("`").partition(".")
            rows[(section, key)] = {"env": cells[1].strip("`"), "default": cells[2]}
    return rows


def test_the_readme_table_agrees_with_the_full_one() -> None:
    full, rows = doc_rows(), readme_rows()
    assert len(rows) >= 10
    for (section, key), row in rows.items():
        assert (section, key) in full, f"README.md names [{section}] {key}, which does not exist"
        assert row == {"env": full[(section, key)]["env"], "default": full[(section, key)]["default"]}, (section, key)


def exposed_metrics() -> dict[str, str]:
    """Every metric bridge/server/metrics.py defines, by the name a scrape shows (counters gain ``_total``)."""
    found: dict[str, str] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            family = value.describe()[0]
            found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return found


def metric_rows() -> dict[str, str]:
    """The rows of docs/scaling.md's metrics table: name -> the type cell."""
    rows = re.findall(r"^\| `(bridge_\w+)` \| ([^|]+) \|", SCALING_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    return {name: kind.strip() for name, kind in rows}


def test_every_metric_has_a_row_with_its_type_in_the_scaling_doc() -> None:
    rows = metric_rows()
    assert len(exposed_metrics()) >= 9
    for name, kind in exposed_metrics().items():
        assert name in rows, f"docs/scaling.md has no row for the metric {name}"
        assert rows[name].startswith(kind), f"{name} is a {kind}; docs/scaling.md says {rows[name]}"


def test_the_scaling_doc_names_no_metric_that_does_not_exist() -> None:
    exposed = exposed_metrics()
    named = set(re.findall(r"\bbridge_[a-z_]+", SCALING_DOC.read_text(encoding="utf-8")))
    suffixes = ("_bucket", "_sum", "_count", "_created")
    unknown = {n for n in named if n not in exposed and not any(n.removesuffix(s) in exposed for s in suffixes)}
    assert not unknown, f"docs/scaling.md names metrics that server/metrics.py does not define: {sorted(unknown)}"
