"""Every environment variable of the service, in one typed place.

``models.settings.ModelSettings`` holds the model-side variables (cache, API, thresholds,
providers); this module holds the service's own and the per-stream ones (parsed into the one
stream model, ``pipelines.stream_config.StreamConfig``). Nothing else in the code reads
``os.environ``. :func:`load_config` is the one validation step that ``edge-agent config`` and
``edge-agent run`` share (it ends in ``agent.validation.validate_config``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_agent.agent.config_views import http_token, mqtt_config, state_dir
from edge_agent.agent.errors import ConfigError
from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.models.common.redaction import MASK, redact_url
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.speed.precision import with_precision
from edge_agent.pipelines.live import LiveViewOptions
from edge_agent.pipelines.sinks.mqtt_config import MqttConfig, parse_broker
from edge_agent.pipelines.stream_config import STREAM_KEYS, STREAM_NAME_RE, STREAM_NAME_RULE, StreamConfig, env_name

BUILTIN_MODEL_ID = "builtin/shapes-v1"
SAMPLE_CLIP = Path(__file__).resolve().parent.parent / "models" / "builtin" / "sample.mp4"
SAMPLE_STREAM = "sample"
# Settings that are secrets whatever their value looks like.
_SECRET_FIELD = re.compile(r"password|api_key|secret|token", re.IGNORECASE)

__all__ = [
    "STREAM_KEYS",
    "STREAM_NAME_RE",
    "AgentSettings",
    "Config",
    "StreamConfig",
    "env_name",
    "http_token",
    "load_config",
    "mqtt_config",
    "parse_streams",
    "redacted",
    "state_dir",
]


class AgentSettings(BaseSettings):
    """The service's own variables (see README's table)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", allow_inf_nan=False)

    streams: str | None = Field(
        default=None,
        description='Streams as "name=url;name=url" (rtsp://, rtsps://, /dev/videoN, file path, http(s)://). '
        "Unset: the bundled sample clip.",
    )
    model_id: str = Field(default=BUILTIN_MODEL_ID, description="Model for every stream without its own.")
    agent_id: str = Field(default_factory=socket.gethostname, description="This agent's id in topics and messages.")
    stream_stall_timeout: float = Field(default=10.0, gt=0, description="Seconds without a frame before reconnecting.")
    stream_open_timeout: float = Field(default=10.0, gt=0, description="Seconds to open a stream.")
    stream_read_timeout: float = Field(default=5.0, gt=0, description="Seconds a single network read may block.")
    reconnect_backoff_initial: float = Field(default=1.0, gt=0, description="First reconnect delay, seconds.")
    reconnect_backoff_max: float = Field(default=30.0, gt=0, description="Cap on the reconnect delay, seconds.")
    stats_interval: float = Field(default=10.0, gt=0, description="Seconds between stats messages.")
    shutdown_timeout: float = Field(default=10.0, gt=0, description="Seconds to finish and flush on stop.")
    stdout_sink: Literal["auto", "true", "false"] = Field(
        default="auto", description="Print predictions as JSON lines: auto = only when MQTT_HOST is unset."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log line format (stderr).")
    health_port: int = Field(
        default=0, ge=0, le=65535, description="HTTP port of the live view (/), /healthz, /readyz, /metrics; 0 = off."
    )
    health_host: str = Field(
        default="127.0.0.1", description="Address of this machine the health server binds (0.0.0.0: every interface)."
    )
    control_api: bool = Field(
        default=False,
        description="Also serve GET/PUT/DELETE /streams[/NAME] on HEALTH_PORT to list, add and remove "
        "streams at run time (not persisted: STREAMS is what a restart runs).",
    )
    http_token: SecretStr | None = Field(
        default=None,
        description="Token the HTTP port asks for (Authorization: Bearer TOKEN) on everything but /healthz and "
        "/readyz: the live view, pictures, control API and metrics. Needed for a non-loopback HEALTH_HOST.",
    )
    http_token_file: str | None = Field(
        default=None, description="File holding HTTP_TOKEN (e.g. a systemd credential)."
    )
    live_view_max_fps: float = Field(
        default=5.0, gt=0, le=60, description="Most pictures per second the live view draws and encodes per stream."
    )
    live_view_max_viewers: int = Field(
        default=4, ge=1, le=1000, description="Most MJPEG viewers (live.mjpg) at a time per stream."
    )
    vlm_model_id: str | None = Field(
        default=None,
        description="Vision-language model asked by streams' VLM_PROMPT (e.g. florence-2-base); needs LMM_ENABLED.",
    )
    vlm_queue_size: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Questions waiting for the vision-language model; when full the oldest is dropped (counted).",
    )
    vlm_cpu_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Most of one core's time the vision-language model computes (the rest it sleeps, "
        "so the detector keeps its pace); 1 = unpaced.",
    )
    vlm_threads: int = Field(
        default=1, ge=1, le=256, description="CPU threads of the vision-language model (the detector keeps the rest)."
    )
    vlm_process: bool = Field(
        default=True,
        description="Run the vision-language model in a child process of its own; false: a thread of the "
        "agent, which shares its Python GIL with the detector and can cost it frames.",
    )
    vlm_nice: int = Field(
        default=19,
        ge=0,
        le=19,
        description="Linux nice value of the vision-language model's threads (0-19; 19, the lowest, also "
        "SCHED_IDLE), so it yields the CPU to the detector; the rest of the agent keeps its own.",
    )
    live_view_jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality of live pictures.")
    state_dir: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STATE_DIR", "STATE_DIRECTORY"),
        description="Directory of the persisted state (MQTT outbox, per-stream seq), one per agent. "
        "Unset: systemd's STATE_DIRECTORY (StateDirectory=edge-agent: /var/lib/edge-agent), else "
        "$XDG_STATE_HOME/edge-agent, else ~/.local/state/edge-agent.",
    )

    mqtt_host: str | None = Field(
        default=None,
        description="MQTT broker: host, host:port, mqtt://host[:port] or mqtts://host[:port] (with MQTT_TLS); "
        "unset = no MQTT.",
    )
    mqtt_port: int | None = Field(
        default=None, ge=1, le=65535, description="MQTT broker port; unset = 1883, or 8883 with MQTT_TLS."
    )
    mqtt_username: str | None = Field(default=None, description="MQTT user name.")
    mqtt_password: SecretStr | None = Field(default=None, description="MQTT password.")
    mqtt_password_file: str | None = Field(
        default=None, description="File holding the MQTT password (e.g. a systemd credential)."
    )
    mqtt_tls: bool = Field(default=False, description="Use TLS to the broker.")
    mqtt_tls_ca: str | None = Field(default=None, description="CA bundle for the broker's certificate.")
    mqtt_tls_cert: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    mqtt_tls_key: str | None = Field(default=None, description="Client key (mutual TLS).")
    mqtt_tls_insecure: bool = Field(default=False, description="Skip the broker host name check (testing only).")
    mqtt_qos: Literal[0, 1, 2] = Field(default=1, description="QoS of prediction messages.")
    mqtt_topic_prefix: str = Field(default="edge-agent", description="First topic level.")
    mqtt_protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    mqtt_message_expiry: int = Field(
        default=300, ge=0, description="MQTT v5 expiry of prediction messages, seconds (0 = never)."
    )
    mqtt_queue_size: int = Field(
        default=100000, ge=1, description="Messages kept while the broker is away; past it the oldest go, counted."
    )
    mqtt_queue_bytes: int = Field(
        default=100 * 1024 * 1024, ge=0, description="Bytes of messages kept while the broker is away (0 = no bound)."
    )
    mqtt_outbox: Literal["disk", "memory"] = Field(
        default="disk",
        description="Where QoS>=1 messages wait for the broker's acknowledgement: disk (SQLite in STATE_DIR, "
        "survives crashes and restarts) or memory.",
    )
    mqtt_outbox_fsync: bool = Field(
        default=False,
        description="fsync every outbox commit: also survives a power cut, at the cost of a disk flush "
        "every few ms under load (a crash of the agent loses nothing either way).",
    )
    mqtt_reconnect_min: float = Field(default=0.5, gt=0, description="First MQTT reconnect delay, seconds.")
    mqtt_reconnect_max: float = Field(
        default=5.0,
        gt=0,
        description="Longest MQTT reconnect delay, seconds (delays double up to it, with jitter): the agent "
        "is back within this of the broker's return.",
    )
    mqtt_online_expiry: int = Field(
        default=60,
        ge=0,
        description="MQTT v5 expiry of the retained 'online' status, refreshed every third of it, so a "
        "broker stops serving 'online' for a dead agent within this many seconds (0 = never expires).",
    )
    mqtt_keepalive: int = Field(default=30, ge=5, description="MQTT keepalive, seconds.")
    snapshot_store_mb: int = Field(
        default=100, ge=1, description="Disk space for event snapshots in STATE_DIR/snapshots (MiB; oldest dropped)."
    )
    mqtt_ha_discovery: bool = Field(default=False, description="Publish Home Assistant discovery configs.")

    @field_validator("agent_id")
    @classmethod
    def _agent_id_is_topic_safe(cls, value: str) -> str:
        if not value or any(c in value for c in "+#/") or value.startswith("$") or len(value) > 128:
            raise ValueError("must be 1-128 characters without '+', '#' or '/', not starting with '$'")
        return value

    @field_validator("stdout_sink", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("mqtt_qos", mode="before")
    @classmethod
    def _qos_int(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("mqtt_host", mode="after")
    @classmethod
    def _broker(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_broker(value)
        except EdgeAgentError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("health_host", mode="after")
    @classmethod
    def _health_host(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty; give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0")
        return value


@dataclass(frozen=True)
class Config:
    """Everything the supervisor needs, resolved and validated."""

    agent: AgentSettings
    models: ModelSettings
    streams: list[StreamConfig] = field(default_factory=list)
    using_sample: bool = False
    #: likely misspelled variables, one line each (agent/env_typos.py): said by `config` and at start
    warnings: tuple[str, ...] = ()

    @property
    def stdout_enabled(self) -> bool:
        if self.agent.stdout_sink == "auto":
            return not self.agent.mqtt_host
        return self.agent.stdout_sink == "true"

    @property
    def mqtt(self) -> MqttConfig | None:
        """The MQTT sink's connection when MQTT_HOST is set (``pipelines.sinks.registry`` reads it)."""
        return mqtt_config(self) if self.agent.mqtt_host else None

    def model_of(self, stream: StreamConfig) -> str:
        """The model a stream runs: its own, else MODEL_ID; with its MODEL_PRECISION as the id's suffix
        (``coco/3@int8``: one loaded model per precision, models/speed/precision.py)."""
        return with_precision(stream.model_id or self.agent.model_id, stream.model_precision)

    def with_default_model(self, stream: StreamConfig) -> StreamConfig:
        model_id = self.model_of(stream)
        return stream if stream.model_id == model_id else stream.model_copy(update={"model_id": model_id})


# -- STREAMS ---------------------------------------------------------------------------------------


def _opens_secret(url: str) -> bool:
    """Does ``url`` end inside a secret (``rtsp://admin:pa`` or ``...?password=x``)? Then a ';'
    right after it was part of the password, not the end of the entry."""
    return redact_url(url).endswith(MASK)


def parse_streams(raw: str) -> list[tuple[str, str]]:
    """``"door=rtsp://cam/live;yard=/dev/video0"`` -> [(name, url), ...].

    Entries are separated by ``;`` or new lines; names must be unique and topic-safe. A ``;``
    inside a password (best written ``%3B``) is kept with its URL when the text after it cannot
    start an entry of its own. Error messages never quote an entry unredacted.
    """
    pieces = re.split(r"([;\n])", raw)
    entries: list[str] = []
    for index in range(0, len(pieces), 2):
        piece = pieces[index]
        separator = pieces[index - 1] if index else ""
        if entries and separator == ";" and piece.strip():
            url = entries[-1].partition("=")[2].strip()
            starts_entry = re.match(r"^\s*[A-Za-z0-9][A-Za-z0-9_-]{0,62}\s*=", piece) is not None
            if starts_entry:
                # "pa;b=c@host": the entry's URL has an unfinished userinfo that this piece ends
                join = _opens_secret(url) and "@" not in url and "@" in piece
            else:
                join = "@" in piece or _opens_secret(url)
            if join:
                entries[-1] += separator + piece
                continue
        entries.append(piece)
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    number = 0
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        number += 1
        name, sep, url = entry.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or "://" in name or name.startswith("/"):
            # not quoted: a piece without a name may be the tail of a password
            raise ConfigError(
                f"STREAMS entry {number} has no name; write it as name=url, "
                "e.g. STREAMS=\"door=rtsp://10.0.0.5/live;yard=/dev/video0\" (a ';' inside a password: %3B)"
            )
        if not STREAM_NAME_RE.match(name):
            raise ConfigError(
                f"STREAMS entry {number}: stream name {redact_url(name)!r} is invalid; accepted: {STREAM_NAME_RULE}"
            )
        if not url:
            raise ConfigError(f"STREAMS entry {number}: stream {name!r} has no URL after '='")
        key = env_name(name)
        if key in seen:
            raise ConfigError(f"STREAMS: stream name {name!r} is used twice (names are compared case-insensitively)")
        seen.add(key)
        pairs.append((name, url))
    if not pairs:
        raise ConfigError('STREAMS is set but names no stream; write it as "name=url;name=url"')
    return pairs


def _shown(value: Any) -> str:
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


def stream_from_env(
    name: str, url: str, environ: Mapping[str, str], defaults: Mapping[str, Any] | None = None
) -> StreamConfig:
    """One stream from its URL and its STREAM_<NAME>_<KEY> variables (``environ``: upper-case keys)."""
    prefix = f"STREAM_{env_name(name)}_"
    values: dict[str, Any] = dict(defaults or {})
    for key in STREAM_KEYS:
        raw = environ.get(prefix + key)
        if raw is not None and raw.strip():
            values[key.lower()] = raw.strip()
    try:
        return StreamConfig(name=name, url=url, **values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = str(err["loc"][0]) if err["loc"] else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            if where == "url":
                lines.append(f"STREAMS: the URL of stream {name!r} is invalid: {message}")
            elif where == "name":
                lines.append(f"STREAMS: {message}")
            elif not where:  # a rule across options (a model-level check)
                lines.append(f"{prefix.rstrip('_')}: {message}")
            else:
                var, hint = prefix + where.upper(), STREAM_KEYS.get(where.upper(), "")
                lines.append(f"{var}={_shown(err.get('input'))} is invalid: {message} — {hint}")
        raise ConfigError("\n".join(lines)) from None


def _unknown_stream_vars(names: list[str], environ: Mapping[str, str]) -> list[str]:
    known = {env_name(n) for n in names}
    unknown = []
    for var in environ:
        if not var.startswith("STREAM_") or var.startswith(("STREAM_STALL_", "STREAM_OPEN_", "STREAM_READ_")):
            continue
        rest = var[len("STREAM_") :]
        if not any(rest.startswith(k + "_") and rest[len(k) + 1 :] in STREAM_KEYS for k in known):
            unknown.append(var)
    return sorted(unknown)


# -- the whole configuration -------------------------------------------------------------------------


def format_validation_error(exc: ValidationError, model: type[BaseSettings]) -> str:
    """One line per bad variable: name, value (redacted), problem, and what the variable is for."""
    lines = []
    for err in exc.errors():
        field_name = str(err["loc"][0]) if err["loc"] else "?"
        info = model.model_fields.get(field_name)
        var = field_name.upper()
        if info is not None and info.validation_alias is not None:
            alias = info.validation_alias
            choices = getattr(alias, "choices", None)
            var = " / ".join(str(c).upper() for c in choices) if choices else str(alias).upper()
        value = err.get("input")
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"].startswith("bool"):
            msg += " (accepted: true/false, 1/0, yes/no, on/off)"
        hint = f" — {info.description}" if info is not None and info.description else ""
        shown = MASK if _SECRET_FIELD.search(field_name) or "key" in field_name else _shown(value)
        lines.append(f"{var}={shown} is invalid: {msg}{hint}")
    return "\n".join(lines)


def load_config() -> Config:
    """Read and validate every variable; raise :class:`ConfigError` naming the bad ones.

    This is the whole check ``edge-agent config`` runs, and the one ``run`` runs before it starts
    anything: a configuration ``config`` accepts is one ``run`` starts with.
    """
    from edge_agent.agent.validation import validate_config

    env = dict(os.environ)
    try:
        agent = AgentSettings()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, AgentSettings)) from None
    try:
        model_settings = ModelSettings()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ModelSettings)) from None

    upper_env = {k.upper(): v for k, v in env.items()}
    using_sample = not (agent.streams and agent.streams.strip())
    if using_sample:
        # The sample is a stream like any other: STREAM_SAMPLE_* overrides apply to it.
        pairs = [(SAMPLE_STREAM, str(SAMPLE_CLIP))]
        streams = [stream_from_env(SAMPLE_STREAM, str(SAMPLE_CLIP), upper_env, defaults={"loop": True})]
    else:
        pairs = parse_streams(agent.streams or "")
        streams = [stream_from_env(n, u, upper_env) for n, u in pairs]
    unknown = _unknown_stream_vars([n for n, _ in pairs], upper_env)
    if unknown:
        names = ", ".join(n for n, _ in pairs)
        where = "the bundled sample (STREAMS is unset)" if using_sample else f"STREAMS ({names})"
        raise ConfigError(
            f"{unknown[0]} does not match any stream in {where} or any known key; "
            f"accepted: STREAM_<NAME>_<KEY> with KEY one of {', '.join(STREAM_KEYS)}"
        )
    streams = [s if s.model_id else s.model_copy(update={"model_id": agent.model_id}) for s in streams]
    from edge_agent.agent.env_typos import warnings_for

    warnings = tuple(warnings_for(env, (AgentSettings, ModelSettings)))
    config = Config(agent=agent, models=model_settings, streams=streams, using_sample=using_sample, warnings=warnings)
    validate_config(config)
    return config


def live_view_options(agent: AgentSettings) -> LiveViewOptions:
    return LiveViewOptions(
        max_fps=agent.live_view_max_fps,
        max_viewers=agent.live_view_max_viewers,
        jpeg_quality=agent.live_view_jpeg_quality,
    )


def secrets_of(config: Config) -> list[str]:
    """Every secret the configuration holds, for the log scrubber (``agent.logs``)."""
    from edge_agent.models.common.redaction import url_secrets

    found: list[str] = []
    for stream in config.streams:
        found.extend(url_secrets(stream.url))
    if config.agent.streams:
        found.extend(url_secrets(config.agent.streams))
    if config.agent.mqtt_password is not None:
        found.append(config.agent.mqtt_password.get_secret_value())
    if config.models.api_key:
        found.append(config.models.api_key)
    found.extend(url_secrets(config.models.api_base_url))
    return [s for s in dict.fromkeys(found) if s]


def redacted(config: Config) -> dict[str, Any]:
    """The resolved configuration as printed by ``edge-agent config``: secrets never shown."""

    def dump(settings: BaseSettings) -> dict[str, Any]:
        out = {}
        for name, value in settings.model_dump().items():
            if value is not None and (isinstance(value, SecretStr) or _SECRET_FIELD.search(name)):
                value = MASK
            elif isinstance(value, str):
                value = redact_url(value)
            out[name.upper()] = value
        return out

    agent = dump(config.agent)
    if config.agent.streams:
        agent["STREAMS"] = ";".join(f"{s.name}={s.display_url}" for s in config.streams)
    result: dict[str, Any] = {
        "agent": agent,
        "models": dump(config.models),
        "streams": [config.with_default_model(s).public() for s in config.streams],
        "sinks": (["mqtt"] if config.agent.mqtt_host else []) + (["stdout"] if config.stdout_enabled else []),
    }
    if config.agent.mqtt_host:
        result["mqtt_broker"] = mqtt_config(config).describe()
    return result
