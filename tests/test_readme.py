"""The README's promises that can drift from the code."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


# -- every example the env table gives parses to what it says -------------------------------------


def _table() -> dict[str, str]:
    from tools.env_table import parse

    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- env-table:start -->\n(.*?)\n<!-- env-table:end -->", text, re.S)
    assert match
    return parse(match.group(1))


def _model_id(value: str) -> str:
    from edge_agent.models.identity.ids import parse_model_id

    return parse_model_id(value).model_id


def _stream(key: str, value: str) -> Any:
    from edge_agent.agent.settings import stream_from_env

    return stream_from_env("cam", "/dev/video0", {f"STREAM_CAM_{key}": value})


def _providers(value: str) -> list[str]:
    from edge_agent.models.common.settings import parse_provider_list

    return parse_provider_list(value)


def _model_settings(**values: str) -> Any:
    from edge_agent.models.common.settings import ModelSettings

    return ModelSettings(**values)  # type: ignore[arg-type]


def _backends(value: str) -> Any:
    from edge_agent.models.resolution.package_loader import preferences

    return preferences(_model_settings(model_package_backends=value)).backends


def _precision(value: str) -> Any:
    from edge_agent.models.speed.precision import split_precision

    return split_precision(value)


CUDA_CPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]
# (variable cell, pattern that finds the example in that row, how the code reads it, what it must give).
# Each pattern is searched in the README's own text, so the example checked is the one a user copies.
EXAMPLES: list[tuple[str, str, Callable[[str], Any], Any]] = [
    ("`STREAM_<NAME>_VLM_PROMPT`", r"e\.g\. '([^']+)'", lambda v: _stream("VLM_PROMPT", v).vlm_prompt, "<CAPTION>"),
    ("`VLM_MODEL_ID`", r"\(e\.g\. ([\w-]+)\)", _model_id, "florence-pretrains/3"),
    (
        "`STREAM_<NAME>_PROMPTS`",
        r'\("([^"]+)"\)',
        lambda v: _stream("PROMPTS", v).prompts,
        ("a person", "an empty room"),
    ),
    (
        "`STREAM_<NAME>_PROMPTS`",
        r'JSON list or separated by "(.)"',
        lambda v: _stream("PROMPTS", f"a{v}b").prompts,
        ("a", "b"),
    ),
    ("`ONNXRUNTIME_EXECUTION_PROVIDERS`", r"e\.g\. '([^']+)'", _providers, CUDA_CPU),
    ("`ONNXRUNTIME_EXECUTION_PROVIDERS`", r"or '([^']+)'\)", _providers, CUDA_CPU),
    ("`STREAM_<NAME>_VIDEO_SIZE`", r"e\.g\. (\S+)", lambda v: _stream("VIDEO_SIZE", v).video_size, "1280x720"),
    ("`STREAM_<NAME>_INPUT_FORMAT`", r"e\.g\. (\w+),", lambda v: _stream("INPUT_FORMAT", v).input_format, "mjpeg"),
    (
        "`STREAM_<NAME>_INPUT_FORMAT`",
        r"e\.g\. \w+, (\w+)",
        lambda v: _stream("INPUT_FORMAT", v).input_format,
        "yuyv422",
    ),
    ("`MODEL_PRECISION`", r"such as (\S+@int8)", _precision, ("yolov8n-640", "int8")),
    ("`MODEL_PACKAGE_BACKENDS`", r"comma list \(([^)]+)\)", _backends, ("onnx", "torch-script", "trt")),
    (
        "`OPENVINO_DEVICE_TYPE`",
        r"or (AUTO:\S+) /",
        lambda v: _model_settings(openvino_device_type=v).openvino_device_type,
        "AUTO:GPU,CPU",
    ),
    (
        "`DEFAULT_DEVICE`",
        r"cuda or (cuda):N",
        lambda v: _model_settings(default_device=v + ":1").default_device,
        "cuda:1",
    ),
    (
        "`STREAM_<NAME>_ROI`",
        r"regions to read, (\S+) in source pixels, several separated by '(.)'",
        lambda v: _stream("ROI", v).roi,
        ((10.0, 20.0, 110.0, 60.0), (0.0, 0.0, 5.0, 5.0)),
    ),
]
# Rows whose "e.g." names a kind of thing, not a value to type.
NOT_VALUES = {"`HTTP_TOKEN_FILE`", "`MQTT_PASSWORD_FILE`"}


@pytest.mark.parametrize(("variable", "pattern", "read", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_env_table_examples_parse_to_what_they_say(
    variable: str, pattern: str, read: Callable[[str], Any], expected: Any
) -> None:
    row = _table()[variable]
    found = re.search(pattern, row)
    assert found, f"the README's row of {variable} lost its example ({pattern}): {row}"
    if found.lastindex == 2:  # the ROI: the form with the separator the row names
        form, separator = found.groups()
        assert form == "x1,y1,x2,y2"
        example = f"10,20,110,60{separator}0,0,5,5"
    else:
        example = found.group(1)
    assert read(example) == expected, f"{variable}={example!r} as the README gives it"


def test_every_example_in_the_env_table_is_checked() -> None:
    checked = {e[0] for e in EXAMPLES}
    with_examples = {var for var, meaning in _table().items() if re.search(r"e\.g\.|\(\"|such as", meaning)}
    assert with_examples - NOT_VALUES <= checked, (
        f"examples nobody checks: {sorted(with_examples - NOT_VALUES - checked)}"
    )


# -- the "Common setups" blocks: every variable known, every value accepted ---------------------------


def _setup_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Common setups\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _commands(block: str) -> list[tuple[dict[str, str], list[str]]]:
    """(variables, command words) of each command of a shell block; a heredoc's KEY=value lines
    (an EnvironmentFile) are variables with no command."""
    import shlex

    out: list[tuple[dict[str, str], list[str]]] = []
    lines = iter(block.replace("\\\n", " ").splitlines())
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if "<<" in line:  # sudo tee FILE <<'EOF' ... EOF: the file's lines
            end = line.rsplit("<<", 1)[1].strip().strip("'\"")
            body = []
            for inner in lines:
                if inner.strip() == end:
                    break
                body.append(inner)
            out.append((dict(entry.split("=", 1) for entry in body if entry.strip()), []))
            continue
        env: dict[str, str] = {}
        while words and re.match(r"^[A-Z][A-Z0-9_]*=", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        out.append((env, words))
    return out


def _check_variables(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.agent.env_typos import known_names, warnings_for
    from edge_agent.agent.settings import AgentSettings, parse_streams, stream_from_env
    from edge_agent.models.common.settings import ModelSettings
    from edge_agent.pipelines.sources.spec import SourceSpec
    from edge_agent.pipelines.stream_config import STREAM_KEYS, env_name

    known = known_names((AgentSettings, ModelSettings))
    for name in known:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    AgentSettings()  # every value of the service's variables is accepted ...
    ModelSettings()  # ... and of the model layer's
    streams = parse_streams(env["STREAMS"]) if "STREAMS" in env else []
    names = {env_name(n) for n, _ in streams}
    for name in env:
        per_stream = any(name.startswith(f"STREAM_{n}_") and name[len(n) + 8 :] in STREAM_KEYS for n in names)
        assert name in known or per_stream, f"{name} is not a variable edge-agent reads"
    for stream, url in streams:
        config = stream_from_env(stream, url, {k.upper(): v for k, v in env.items()})
        if "://" in url:
            SourceSpec.parse(config.url)  # network URLs parse (files and devices exist on the box only)
    assert warnings_for(env, (AgentSettings, ModelSettings)) == []


def test_common_setups_variables_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_agent.agent.cli import build_parser

    blocks = _setup_blocks()
    assert len(blocks) == 6, "one camera to MQTT; several cameras and the live view; offline; INT8; counting; systemd"
    parser = build_parser()
    checked = 0
    for block in blocks:
        for env, words in _commands(block):
            if words and words[0] == "edge-agent":
                args = parser.parse_args(words[1:])  # a command the CLI has, with its options
                assert getattr(args, "handler", None) is not None, words
            if env:
                _check_variables(env, monkeypatch)
                checked += 1
    assert checked >= 7  # every block sets variables (the offline one twice, the service in its file)
