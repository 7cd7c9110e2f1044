"""Which package may import which: the layers of DESIGN.md, checked on the source.

Every ``import`` counts, at the top of a module or inside a function (a lazy import is a
dependency all the same), type-checking ones too. The rules:

- ``connectors`` knows its protocols and nothing of the engine or the reports: it never
  imports ``migrate`` or ``reports`` (the Graph connector converts events and contacts
  with ``mappings``);
- ``connectors.base``, the item model, errors and roles every package shares, imports
  nothing of the project;
- ``mappings`` returns codes with parameters: of the project, it imports only
  ``connectors.base`` and itself;
- ``reports`` writes what it is given: it imports none of ``migrate``, ``connectors``,
  ``mappings``;
- no cycle between the four packages, and none between the modules of ``migrate``. For
  the packages, ``connectors.base`` counts apart from the rest of ``connectors``: it is
  the layer below ``mappings``, while the Graph connector is above it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("migrate", "connectors", "mappings", "reports")
SHARED_MODEL = "connectors.base"
MAY_IMPORT = {
    SHARED_MODEL: (),
    "connectors": ("connectors", "mappings"),
    "mappings": ("mappings", SHARED_MODEL),
    "reports": ("reports",),
}
"""What a package (or the shared model) may import of the project; one not named here may
import any."""


@dataclass(frozen=True)
class Import:
    """One import of a project module by another."""

    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(root: Path) -> list[Import]:
    """Every import, anywhere in a module, of a module of the four packages."""
    modules = {module_name(root, path): path for package in PACKAGES
               for path in sorted((root / package).rglob("*.py"))}
    found = []
    for importer, path in modules.items():
        package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for imported in _imported(node, package, modules):
                if imported.split(".")[0] in PACKAGES:
                    found.append(Import(importer, imported, node.lineno))
    return found


def _imported(node: ast.AST, package: str, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    # ``from migrate import cli`` imports the module migrate.cli, not only the package.
    submodules = [f"{base}.{alias.name}" for alias in node.names
                  if f"{base}.{alias.name}" in modules]
    return submodules or [base]


def broken_rules(imports: list[Import]) -> list[str]:
    """What breaks a rule, each said once; empty when the layers hold."""
    broken = []
    for found in imports:
        allowed = MAY_IMPORT.get(_layer(found.importer))
        if allowed is not None and not any(_within(found.imported, name) for name in allowed):
            broken.append(f"{found}, which its package may not import")
    layers = {(_layer(f.importer), _layer(f.imported)) for f in imports}
    broken += _cycle("packages", {(a, b) for a, b in layers if a != b})
    broken += _cycle("modules of migrate", {
        (f.importer, f.imported) for f in imports
        if f.importer.startswith("migrate.") and f.imported.startswith("migrate.")
        and f.importer != f.imported})
    return broken


def _within(module: str, name: str) -> bool:
    return module == name or module.startswith(name + ".")


def _layer(module: str) -> str:
    return SHARED_MODEL if _within(module, SHARED_MODEL) else module.split(".")[0]


def _cycle(between: str, edges: set[tuple[str, str]]) -> list[str]:
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        graph.setdefault(importer, set()).add(imported)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return [f"a cycle between {between}: " + " -> ".join(error.args[1])]
    return []


def test_the_project_keeps_its_import_rules() -> None:
    imports = project_imports(ROOT)
    assert any(f.importer == "migrate.engine" for f in imports)
    assert broken_rules(imports) == []


def write(root: Path, module: str, text: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.parent.mkdir(exist_ok=True)
    (path.parent / "__init__.py").touch()
    path.write_text(text, encoding="utf-8")


def test_the_check_finds_each_kind_of_broken_rule(tmp_path: Path) -> None:
    write(tmp_path, "connectors.base", "import reports.files\n")
    write(tmp_path, "connectors.imap", "import mappings.users\n"
                                       "def login():\n    from migrate.engine import Engine\n")
    write(tmp_path, "mappings.users", "from connectors.base import BasculeError\n"
                                      "from . import folders\n")
    write(tmp_path, "mappings.folders", "from connectors.imap import login\n")
    write(tmp_path, "reports.files", "from .i18n import Text\n")
    write(tmp_path, "reports.i18n", "from mappings import users\n")
    write(tmp_path, "migrate.engine", "from migrate import cli\n")
    write(tmp_path, "migrate.cli", "import mappings.users\n"
                                   "def demo():\n    from .engine import Engine\n")
    broken = broken_rules(project_imports(tmp_path))
    refused = "which its package may not import"
    assert broken[:4] == [
        f"connectors.base:1 imports reports.files, {refused}",
        f"connectors.imap:3 imports migrate.engine, {refused}",
        f"mappings.folders:1 imports connectors.imap, {refused}",
        f"reports.i18n:1 imports mappings.users, {refused}",
    ]
    assert len(broken) == 6
    assert broken[4].startswith("a cycle between packages: ")
    assert broken[5] in (
        "a cycle between modules of migrate: migrate.cli -> migrate.engine -> migrate.cli",
        "a cycle between modules of migrate: migrate.engine -> migrate.cli -> migrate.engine")


def test_a_run_without_graph_does_not_load_msal_or_requests() -> None:
    """Every connector is registered at start (the batch model names them all); the
    libraries of one the batch does not use wait until it is opened: msal and requests
    cost a fifth of a second of every command's start on a small machine."""
    loaded = subprocess.run(
        [sys.executable, "-c", ("import sys, migrate.cli, connectors.registry as registry\n"
                                "registry.connectors()\n"
                                "print(sorted(m for m in ('msal', 'requests', 'urllib3')"
                                " if m in sys.modules))")],
        cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
