"""The configuration tables in the docs list exactly the Settings fields, with their defaults."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

import service
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_PARENT = Path(service.__file__).resolve().parent.parent
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def table_between_markers(path: Path) -> str:
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        pytest.fail(
            f"{path.name} has no configuration table between {START} and {END}. "
            f"Add both marker lines and run: scripts/settings_table.py --write {path.name}"
        )
    return text[start + len(START) : end]


def parse_table(markdown: str) -> dict[str, tuple[str, str]]:
    """{variable: (default cell, description cell)} from a 3-column markdown table."""
    rows: dict[str, tuple[str, str]] = {}
    lines = [line.strip() for line in markdown.splitlines() if line.strip().startswith("|")]
    assert len(lines) >= 2, f"no markdown table found in:\n{markdown}"
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "Variable",
        "Default",
        "Description",
    ]
    for line in lines[2:]:
        cells = [c.strip() for c in UNESCAPED_PIPE.split(line.strip().strip("|"))]
        assert len(cells) == 3, f"expected 3 cells: {line}"
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (cells[1], cells[2].replace("\\|", "|"))
    return rows


def documented_value(cell: str, annotation: Any) -> Any:
    """What the setting becomes when its variable is set to the documented default."""
    if cell == "unset":
        return None
    text = cell.strip("`")
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        value = adapter.validate_python(text)
    except ValidationError:  # complex types are read from the environment as JSON
        value = adapter.validate_json(text)
    if isinstance(value, Path):
        value = as_path(str(value))
    return value


def as_path(documented: str) -> Path:
    """A documented path: `~/...`, package-relative (the bundled demo models) or absolute."""
    path = Path(documented).expanduser()
    return path if path.is_absolute() else PACKAGE_PARENT / path


def generated_table() -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


SOURCES = {
    "generator": generated_table,
    "docs/deployment.md": lambda: table_between_markers(ROOT / "docs" / "deployment.md"),
    "README.md": lambda: table_between_markers(ROOT / "README.md"),
}


def test_every_setting_has_a_docstring():
    undocumented = [
        n for n, f in Settings.model_fields.items() if not (f.description or "").strip()
    ]
    assert not undocumented, (
        f"add a docstring under these fields in service/settings.py: {undocumented}"
    )


@pytest.mark.parametrize("source", list(SOURCES))
def test_table_lists_exactly_the_settings_with_their_defaults(source):
    rows = parse_table(SOURCES[source]())

    expected = {f"LSTM_{name.upper()}": name for name in Settings.model_fields}
    assert set(rows) == set(expected), (
        f"{source}: missing {sorted(set(expected) - set(rows))}, "
        f"not settings {sorted(set(rows) - set(expected))}; "
        f"regenerate: scripts/settings_table.py --write {source}"
    )
    for variable, (default_cell, description) in rows.items():
        field = Settings.model_fields[expected[variable]]
        default = field.get_default(call_default_factory=True)
        if isinstance(default, Path):
            default = default.resolve()
        assert documented_value(default_cell, field.annotation) == default, (
            f"{source}: {variable} documented default {default_cell}, actual {default!r}"
        )
        assert description == " ".join((field.description or "").split()), (
            f"{source}: {variable} description differs from its docstring"
        )


def test_documented_defaults_round_trip_through_the_environment(monkeypatch):
    """Setting every variable to its documented default gives the default settings."""
    for variable, (default_cell, _) in parse_table(generated_table()).items():
        if default_cell == "unset":
            monkeypatch.delenv(variable, raising=False)
            continue
        value = default_cell.strip("`")
        annotation = Settings.model_fields[variable.removeprefix("LSTM_").lower()].annotation
        if annotation in (Path, Path | None):
            value = str(as_path(value))
        monkeypatch.setenv(variable, value)

    def resolved(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v.resolve() if isinstance(v, Path) else v for k, v in values.items()}

    defaults = {
        n: f.get_default(call_default_factory=True) for n, f in Settings.model_fields.items()
    }
    assert resolved(Settings().model_dump()) == resolved(defaults)
