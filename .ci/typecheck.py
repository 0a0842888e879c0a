"""mypy over agent/, pipelines/ and models/ under their installed names (edge_agent.*).

mypy cannot follow setuptools' editable-install import hook, and it names a file after its folders
(``agent/cli.py`` would be ``agent.cli``). This hands mypy every file with the module name that
pyproject.toml's ``[tool.setuptools] package-dir`` gives it, so imports between them resolve.
Options come from ``[tool.mypy]`` in pyproject.toml. Run from anywhere:

    python .ci/typecheck.py
"""

from __future__ import annotations

import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy depends on tomli there
    import tomli as tomllib
from pathlib import Path

from mypy import build
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources() -> list[BuildSource]:
    """One BuildSource per file of every package directory pyproject.toml maps."""
    package_dir: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    found: dict[str, BuildSource] = {}
    for name, folder in package_dir.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            if any(part.startswith(".") for part in rel):
                continue
            if name == "edge_agent" and rel:  # edge_agent/ holds only its own __init__.py
                continue
            module = ".".join((name, *rel))
            found[module] = BuildSource(str(path), module, None, base_dir=str(ROOT))
    return list(found.values())


def main() -> int:
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *sys.argv[1:], "-c", "pass"])
    srcs = sources()
    try:
        result = build.build(srcs, options)
        messages = result.errors
    except Exception as exc:  # mypy's CompileError carries the messages
        messages = list(getattr(exc, "messages", [str(exc)]))
    for line in messages:
        print(line)
    errors = [m for m in messages if ": error:" in m]
    summary = f"Found {len(errors)} errors" if errors else "Success: no issues found"
    print(f"{summary} in {len(srcs)} source files")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
