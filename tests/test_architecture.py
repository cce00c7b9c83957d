"""docs/architecture.md is the map of the code: every module of the package is on it, and
every module it names exists."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESCRIPTION_COLUMN = 28  # the map's descriptions start here; entries stand left of it


def mapped_paths() -> set[str]:
    """The files and folders the map's tree names, as paths from the repository root."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    tree = re.search(r"```\n(.*?)```", text, flags=re.S).group(1)
    stack: list[tuple[int, str]] = []  # (indent, folder path) of the enclosing folders
    paths = set()
    for line in tree.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        name = stripped.split(" ", 1)[0] if stripped else ""
        if indent >= DESCRIPTION_COLUMN or not name.endswith((".py", "/")):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + name
        paths.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, path))
    return paths


def test_every_module_of_the_package_is_on_the_map():
    mapped = mapped_paths()
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "needles_tf").rglob("*.py")
        if path.name != "__init__.py" and "configs/sweeps" not in str(path)
    }
    missing = sorted(m for m in modules if m not in mapped)
    assert not missing, f"modules missing from docs/architecture.md: {missing}"


def test_every_module_on_the_map_exists():
    absent = sorted(p for p in mapped_paths() if not (ROOT / p).exists())
    assert not absent, f"docs/architecture.md names what does not exist: {absent}"
