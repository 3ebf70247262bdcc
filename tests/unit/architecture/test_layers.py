"""Imports run one way (DESIGN §3): each package imports only the layers below it.

    funnel (the pure core)
      <- storage (ClickHouse: schema, stores, sink, reports)
      <- stream_processors (the runtime's hosts: Faust agents, the embedded runner)
      <- producers (collector, SDK, simulator; the collector hosts the embedded runner)
      <- dashboards, devtools, funnel.cli (on top: they may import anything)

Every ``import`` and ``from … import`` of every module counts, also those inside functions
(lazy imports are still dependencies). A test of the test shows a wrong-way import is caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAYERS = ["funnel", "storage", "stream_processors", "producers"]
ON_TOP = {"dashboards", "devtools", "funnel.cli"}
OURS = set(LAYERS) | {"dashboards", "devtools"}


def _package(module: str) -> str:
    """The layer a module belongs to (``funnel.cli`` is a layer of its own, on top)."""
    if module == "funnel.cli" or module.startswith("funnel.cli."):
        return "funnel.cli"
    return module.split(".")[0]


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = module.split(".")[: -node.level]
                found.add(".".join([*base, node.module or ""]).strip("."))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m.split(".")[0] in OURS}


def wrong_way(files: dict[str, Path]) -> list[str]:
    """``importer -> imported`` for every import that goes up or sideways."""
    wrong = []
    for module, path in sorted(files.items()):
        layer = _package(module)
        if layer in ON_TOP:
            continue
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        for imported in sorted(_imports(path, module)):
            target = _package(imported)
            if target not in allowed:
                wrong.append(f"{module} -> {imported}")
    return wrong


def _modules() -> dict[str, Path]:
    files = {}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def test_imports_run_one_way() -> None:
    files = _modules()
    assert "storage.sink" in files
    assert "funnel.processor" in files
    assert wrong_way(files) == []


@pytest.mark.parametrize(
    ("module", "line", "imported"),
    [
        (
            "storage.spy",
            "from stream_processors.topics import create_topics",
            "stream_processors.topics",
        ),
        ("funnel.spy", "def later():\n    import storage.backends", "storage.backends"),
        (
            "stream_processors.spy",
            "from producers.collector import create_app",
            "producers.collector",
        ),
        ("storage.reports.spy", "from ..sink import Sink", ""),  # relative, same layer
    ],
)
def test_a_wrong_way_import_is_caught(
    tmp_path: Path, module: str, line: str, imported: str
) -> None:
    path = tmp_path / "spy.py"
    path.write_text(line + "\n", "utf-8")
    assert wrong_way({module: path}) == ([f"{module} -> {imported}"] if imported else [])
