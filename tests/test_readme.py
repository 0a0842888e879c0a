"""The README's promises that can drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from tools.env_table import markdown

ROOT = Path(__file__).resolve().parent.parent


def test_env_table_matches_the_settings() -> None:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- env-table:start -->\n(.*?)\n<!-- env-table:end -->", text, re.S)
    assert match, "README lost its env-table markers"
    assert match.group(1).strip() == markdown().strip(), "README table is stale: python -m tools.env_table"


def test_readme_opens_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0].endswith("edge-agent run")
    assert commands[1] == "bash .ci/run"
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()
