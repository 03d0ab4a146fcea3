"""The code's shape: modules use one another's public names only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = ("recon", "pipelines", "tests", "bench")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: Path) -> list[str]:
    """Where a module takes a private name of another module of the project: imported by
    name, or read as an attribute of a project module it imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OWN:
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno}: {alias.name} "
                                 f"from {node.module}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OWN and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and _private(node.attr)):
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_takes_another_modules_private_names() -> None:
    files = [path for folder in OWN for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    assert [use for path in files for use in private_uses(path)] == []


def test_the_check_finds_a_private_import_and_a_private_attribute(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from recon.formats import grid\nfrom recon.core.reasons import _x\n"
                     "grid._hidden\n", encoding="utf-8")
    found = private_uses(probe)
    assert [use.split(": ", 1)[1] for use in found] == [
        "_x from recon.core.reasons", "grid._hidden"]
