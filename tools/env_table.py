"""Print the README's table of environment variables from the settings classes themselves.

    python -m tools.env_table > /tmp/table.md   # then paste between the README's markers

``tests/test_readme.py`` fails when a variable is missing from the README, so the table cannot
drift from the code.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_settings import BaseSettings

from edge_agent.agent.settings import STREAM_KEYS, AgentSettings
from edge_agent.models.common.settings import ModelSettings


def env_names(model: type[BaseSettings], name: str) -> list[str]:
    info = model.model_fields[name]
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c).upper() for c in choices]
    if isinstance(alias, str):
        return [alias.upper()]
    return [name.upper()]


def _default(value: Any) -> str:
    if value is None:
        return ""
    if callable(value):
        return ""
    return f"`{value}`"


def rows() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for model in (AgentSettings, ModelSettings):
        for name, info in model.model_fields.items():
            default = info.default if info.default_factory is None else None
            if name == "agent_id":
                default = "host name"
            names = " / ".join(f"`{n}`" for n in env_names(model, name))
            out.append((names, _default(default), info.description or ""))
    for key, text in STREAM_KEYS.items():
        out.append((f"`STREAM_<NAME>_{key}`", "", text))
    return out


def parse(table: str) -> dict[str, str]:
    """The README's table back as {variable cell: meaning as Markdown shows it} (``\\|`` is ``|``)."""
    out: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        out[cells[0]] = cells[2]
    return out


def markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var, default, text in rows():
        # A '|' in a cell is escaped, never replaced: it is the CLIP prompts' separator.
        escaped = text.replace("|", "\\|")
        lines.append(f"| {var} | {default} | {escaped} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
