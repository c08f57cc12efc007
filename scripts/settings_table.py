#!/usr/bin/env python
"""Print the configuration table (markdown) built from `service.settings.Settings`.

    scripts/settings_table.py                  print the table
    scripts/settings_table.py --write FILE     replace the table between the markers in FILE
    scripts/settings_table.py --check FILE     exit 1 when FILE's table is not the current one

The markers are `<!-- settings-table:start -->` and `<!-- settings-table:end -->`.
Descriptions are the fields' docstrings (`use_attribute_docstrings=True` in Settings).
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import service
from service.settings import Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
HEADER = "| Variable | Default | Description |\n|---|---|---|"
PACKAGE_PARENT = Path(service.__file__).resolve().parent.parent


def env_name(field_name: str) -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    return f"{prefix}{field_name}".upper()


def render_default(value: Any) -> str:
    """The default as an environment value (`unset` for None), so a reader can paste it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Path):
        # Shown the same on every machine: package-relative (the demo models) or under `~`.
        path = value.resolve()
        if path.is_relative_to(PACKAGE_PARENT):
            return f"`{path.relative_to(PACKAGE_PARENT)}`"
        if path.is_relative_to(Path.home()):
            return f"`~/{path.relative_to(Path.home())}`"
        return f"`{path}`"
    return f"`{value}`"


def one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def rows() -> list[tuple[str, str, str]]:
    table = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise SystemExit(
                f"Settings.{name} has no docstring: document it in service/settings.py"
            )
        default = render_default(field.get_default(call_default_factory=True))
        table.append((f"`{env_name(name)}`", default, one_line(field.description)))
    return table


def table() -> str:
    lines = [HEADER, *(f"| {a} | {b} | {c} |" for a, b, c in rows())]
    return "\n".join(lines)


def between_markers(text: str, path: Path) -> tuple[int, int]:
    """The text span between the markers, or SystemExit naming what is missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: needs the lines {START} and {END} around the settings table")
    return start + len(START), end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="FILE")
    action.add_argument("--check", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    current = table()
    path = args.write or args.check
    if path is None:
        print(current)
        return 0
    text = path.read_text()
    start, end = between_markers(text, path)
    if args.check:
        if text[start:end].strip() != current:
            print(f"{path}: settings table is stale; run scripts/settings_table.py --write {path}")
            return 1
        return 0
    path.write_text(f"{text[:start]}\n{current}\n{text[end:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
