"""The layout keeps its promises: no import cycles, imports only go down the layers, no links,
and pyproject.toml lists every package folder (README "Where things are")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_graph import ROOT, cycles, graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: models/ subpackages, lowest first: each may import only those before it (and itself).
MODELS_LAYERS = (
    "common",
    "identity",
    "maths",
    "artifacts",
    "speed",
    "engines",
    "tasks",
    "foundation",
    "resolution",
    "quantization",
)
#: (importer prefix, imported prefix) pairs that must never appear.
FORBIDDEN = (
    ("edge_agent.pipelines", "edge_agent.agent"),
    ("edge_agent.models", "edge_agent.pipelines"),
    ("edge_agent.models", "edge_agent.agent"),
    ("tools", "bench"),
    ("edge_agent", "bench"),
    ("edge_agent", "tools"),
)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _layer(name: str) -> int | None:
    """Position of a models module's subpackage in MODELS_LAYERS (None: the models facade itself)."""
    parts = name.split(".")
    if parts[:2] != ["edge_agent", "models"] or len(parts) < 3:
        return None
    if parts[2] not in MODELS_LAYERS:
        raise AssertionError(f"{name} is in no layer: add its subpackage to MODELS_LAYERS and the README")
    return MODELS_LAYERS.index(parts[2])


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            for importer, imported in FORBIDDEN:
                if _under(source, importer) and _under(target, imported):
                    found.append(f"{source} imports {target} ({importer} must not import {imported})")
            mine, theirs = _layer(source), _layer(target)
            if mine is not None and _under(target, "edge_agent.models") and (theirs is None or theirs > mine):
                found.append(
                    f"{source} imports {target}: models.{MODELS_LAYERS[mine]} may only import layers below it"
                    f" ({', '.join(MODELS_LAYERS[:mine]) or 'none'})"
                )
    return found


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checks_catch_a_planted_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks themselves: a cycle through a function-level and a relative import is found, an
    import under TYPE_CHECKING is not an edge, and an upward import between layers is named."""
    _write(
        tmp_path,
        {
            "agent/__init__.py": "",
            "agent/a.py": "from edge_agent.agent import b\n",
            "agent/b.py": "def f():\n    from .c import g\n",
            "agent/c.py": "from edge_agent.agent.a import x\n",
            "agent/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edge_agent.agent.e import y\n",
            "agent/e.py": "import edge_agent.agent.d\n",
            "pipelines/__init__.py": "",
            "pipelines/p.py": "from edge_agent.agent.a import x\n",
            "models/__init__.py": "",
            "models/common/__init__.py": "",
            "models/common/errors.py": "from edge_agent.models.engines.onnx import OnnxEngine\n",
            "models/engines/__init__.py": "",
            "models/engines/onnx.py": "from ..common.errors import E\n",
            "bench/__init__.py": "",
            "tools/__init__.py": "",
            "tools/t.py": "from bench.common import x\n",
        },
    )
    edges = graph(tmp_path)
    assert edges["edge_agent.agent.b"] == {"edge_agent.agent.c"}
    assert edges["edge_agent.agent.d"] == set()
    assert sorted(cycles(edges)) == [
        ["edge_agent.agent.a", "edge_agent.agent.b", "edge_agent.agent.c"],
        ["edge_agent.models.common.errors", "edge_agent.models.engines.onnx"],
    ]
    assert layer_violations(edges) == [
        "edge_agent.models.common.errors imports edge_agent.models.engines.onnx: models.common may only import"
        " layers below it (none)",
        "edge_agent.pipelines.p imports edge_agent.agent.a (edge_agent.pipelines must not import edge_agent.agent)",
        "tools.t imports bench (tools must not import bench)",
    ]


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (break each: move the shared part down a layer):\n" + "\n".join(
        f"{len(c)} files: {', '.join(c)}" for c in found
    )


def test_imports_only_go_down_the_layers() -> None:
    found = layer_violations(graph())
    assert not found, "\n".join(found)


def test_pyproject_lists_every_package_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    present = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            present.add(".".join((name, *parts)))
    assert present == listed, f"not listed: {sorted(present - listed)}; no folder: {sorted(listed - present)}"


def test_no_symbolic_links_in_the_repository() -> None:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    links = [line.split("\t", 1)[1] for line in listing.splitlines() if line.startswith("120000 ")]
    assert not links, f"symbolic links in the repository: {links}"
