"""Every environment variable of the service, in one typed place.

``models.settings.ModelSettings`` holds the model-side variables (cache, API, thresholds,
providers); this module holds the service's own and the per-stream ones, and turns both into the
plain config objects ``pipelines`` takes. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.errors import ConfigError
from models.errors import EdgeAgentError
from models.precision import check_precision, split_precision, with_precision
from models.settings import ModelSettings
from pipelines.sinks.mqtt_config import MqttConfig
from pipelines.sources.options import SourceOptions

STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
BUILTIN_MODEL_ID = "builtin/shapes-v1"
SAMPLE_CLIP = Path(__file__).resolve().parent.parent / "models" / "builtin" / "sample.mp4"

# Per-stream overrides: STREAM_<NAME>_<KEY>. Key -> (description, accepted values for the error text).
STREAM_KEYS: dict[str, str] = {
    "MODEL_ID": "model for this stream (default: MODEL_ID)",
    "MODEL_PRECISION": "fp32 | int8 | auto for this stream's model (default: MODEL_PRECISION)",
    "MODE": "live | every (every: files only, every frame processed)",
    "MAX_FPS": "cap on frames per second taken from the stream (positive number)",
    "CONFIDENCE": "confidence threshold for this stream (0..1)",
    "LOOP": "files: start again at the end (true/false)",
    "RTSP_TRANSPORT": "tcp | udp",
    "VIDEO_SIZE": "V4L2: WIDTHxHEIGHT, e.g. 1280x720",
    "FRAMERATE": "V4L2: frames per second asked of the camera",
    "INPUT_FORMAT": "V4L2: pixel format asked of the camera, e.g. mjpeg, yuyv422",
    "TLS_VERIFY": "rtsps/https: check the server certificate (true/false; off by default: cameras are self-signed)",
    "TLS_CA_FILE": "rtsps/https: PEM file of trusted certificates for TLS_VERIFY",
}


def env_name(stream: str) -> str:
    """How a stream name appears inside STREAM_<NAME>_... variables."""
    return stream.upper().replace("-", "_")


class AgentSettings(BaseSettings):
    """The service's own variables (see README's table)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    streams: str | None = Field(
        default=None,
        description='Streams as "name=url;name=url" (rtsp://, rtsps://, /dev/videoN, file path, http(s)://). '
        "Unset: the bundled sample clip.",
    )
    model_id: str = Field(default=BUILTIN_MODEL_ID, description="Model for every stream without its own.")
    agent_id: str = Field(default_factory=socket.gethostname, description="This agent's id in topics and messages.")
    stream_stall_timeout: float = Field(
        default=10.0, gt=0, description="Seconds without a frame before reconnecting."
    )
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
    health_port: int = Field(default=0, ge=0, le=65535, description="HTTP /healthz and /metrics port; 0 = off.")
    health_host: str = Field(default="127.0.0.1", description="Address the health server binds.")
    control_api: bool = Field(
        default=False,
        description="Also serve GET/PUT/DELETE /streams[/NAME] on HEALTH_PORT to list, add and remove "
        "streams at run time (not persisted: STREAMS is what a restart runs).",
    )

    mqtt_host: str | None = Field(default=None, description="MQTT broker host; unset = no MQTT.")
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
    mqtt_queue_size: int = Field(default=10000, ge=1, description="Messages kept while the broker is away.")
    mqtt_keepalive: int = Field(default=30, ge=5, description="MQTT keepalive, seconds.")
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


@dataclass(frozen=True)
class StreamConfig:
    """One configured stream, with its overrides applied."""

    name: str
    url: str
    model_id: str
    mode: Literal["live", "every"] = "live"
    max_fps: float | None = None
    confidence: float | None = None
    loop: bool = False
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    video_size: str | None = None
    framerate: float | None = None
    input_format: str | None = None
    tls_verify: bool = False
    tls_ca_file: str | None = None


@dataclass(frozen=True)
class Config:
    """Everything the supervisor needs, resolved and validated."""

    agent: AgentSettings
    models: ModelSettings
    streams: list[StreamConfig] = field(default_factory=list)
    using_sample: bool = False

    @property
    def stdout_enabled(self) -> bool:
        if self.agent.stdout_sink == "auto":
            return not self.agent.mqtt_host
        return self.agent.stdout_sink == "true"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{var}={raw!r} is not a boolean; accepted: true/false, 1/0, yes/no, on/off")


def _parse_positive(var: str, raw: str, *, upper: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a number") from None
    if not value > 0 or (upper is not None and value > upper):
        bound = f"in (0, {upper:g}]" if upper is not None else "greater than 0"
        raise ConfigError(f"{var}={raw!r} is out of range; accepted: a number {bound}")
    return value


def parse_streams(raw: str) -> list[tuple[str, str]]:
    """``"door=rtsp://cam/live;yard=/dev/video0"`` -> [(name, url), ...].

    Entries are separated by ``;`` or new lines; names must be unique and topic-safe.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for index, entry in enumerate(re.split(r"[;\n]", raw)):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, url = entry.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or "://" in name or name.startswith("/"):
            raise ConfigError(
                f"STREAMS entry {index + 1} ({entry!r}) has no name; write it as name=url, "
                'e.g. STREAMS="door=rtsp://10.0.0.5/live;yard=/dev/video0"'
            )
        if not STREAM_NAME_RE.match(name):
            raise ConfigError(
                f"STREAMS entry {index + 1}: stream name {name!r} is invalid; accepted: 1-63 characters "
                "of letters, digits, '_' and '-', starting with a letter or digit"
            )
        if not url:
            raise ConfigError(f"STREAMS entry {index + 1}: stream {name!r} has no URL after '='")
        key = env_name(name)
        if key in seen:
            raise ConfigError(f"STREAMS: stream name {name!r} is used twice (names are compared case-insensitively)")
        seen.add(key)
        pairs.append((name, url))
    if not pairs:
        raise ConfigError('STREAMS is set but names no stream; write it as "name=url;name=url"')
    return pairs


def _stream_config(name: str, url: str, default_model: str, environ: Mapping[str, str]) -> StreamConfig:
    prefix = f"STREAM_{env_name(name)}_"
    values: dict[str, Any] = {}
    for key in STREAM_KEYS:
        var = prefix + key
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        raw = raw.strip()
        if key == "MODEL_ID":
            values["model_id"] = raw
        elif key == "MODEL_PRECISION":
            try:
                values["precision"] = (var, check_precision(raw, var))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        elif key == "MODE":
            if raw.lower() not in ("live", "every"):
                raise ConfigError(f"{var}={raw!r} is invalid; accepted: live, every")
            values["mode"] = raw.lower()
        elif key == "MAX_FPS":
            values["max_fps"] = _parse_positive(var, raw)
        elif key == "FRAMERATE":
            values["framerate"] = _parse_positive(var, raw)
        elif key == "CONFIDENCE":
            values["confidence"] = _parse_positive(var, raw, upper=1.0)
        elif key == "LOOP":
            values["loop"] = _parse_bool(var, raw)
        elif key == "RTSP_TRANSPORT":
            if raw.lower() not in ("tcp", "udp"):
                raise ConfigError(f"{var}={raw!r} is invalid; accepted: tcp, udp")
            values["rtsp_transport"] = raw.lower()
        elif key == "VIDEO_SIZE":
            if not re.fullmatch(r"\d{2,5}x\d{2,5}", raw):
                raise ConfigError(f"{var}={raw!r} is invalid; accepted: WIDTHxHEIGHT, e.g. 1280x720")
            values["video_size"] = raw
        elif key == "INPUT_FORMAT":
            values["input_format"] = raw
        elif key == "TLS_VERIFY":
            values["tls_verify"] = _parse_bool(var, raw)
        elif key == "TLS_CA_FILE":
            if not Path(raw).is_file():
                raise ConfigError(f"{var}={raw!r} is not a readable file")
            values["tls_ca_file"] = raw
    model_id = values.pop("model_id", default_model)
    if "precision" in values:
        # The precision travels as the model id's suffix (models/precision.py): one loaded model per choice.
        var, precision = values.pop("precision")
        suffix = split_precision(model_id)[1]
        if suffix not in (None, precision):
            raise ConfigError(f"{var}={precision!r} contradicts the @{suffix} of this stream's model id {model_id!r}")
        model_id = with_precision(model_id, precision)
    return StreamConfig(name=name, url=url, model_id=model_id, **values)


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


def format_validation_error(exc: ValidationError, model: type[BaseSettings]) -> str:
    """One line per bad variable: name, value, problem (pydantic's text lists accepted literals)."""
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
        msg = err["msg"]
        if err["type"].startswith("bool"):
            msg += " (accepted: true/false, 1/0, yes/no, on/off)"
        hint = f" — {info.description}" if info is not None and info.description else ""
        shown = "***" if "password" in field_name or "key" in field_name else repr(value)
        lines.append(f"{var}={shown} is invalid: {msg}{hint}")
    return "\n".join(lines)


def load_config() -> Config:
    """Read and validate every variable; raise :class:`ConfigError` naming the bad ones."""
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
        streams = [
            StreamConfig(name="sample", url=str(SAMPLE_CLIP), model_id=agent.model_id, mode="live", loop=True)
        ]
    else:
        pairs = parse_streams(agent.streams or "")
        streams = [_stream_config(n, u, agent.model_id, upper_env) for n, u in pairs]
        unknown = _unknown_stream_vars([n for n, _ in pairs], upper_env)
        if unknown:
            names = ", ".join(n for n, _ in pairs)
            raise ConfigError(
                f"{unknown[0]} does not match any stream in STREAMS ({names}) or any known key; "
                f"accepted: STREAM_<NAME>_<KEY> with KEY one of {', '.join(STREAM_KEYS)}"
            )
    if agent.mqtt_password is not None and agent.mqtt_password_file:
        raise ConfigError("MQTT_PASSWORD and MQTT_PASSWORD_FILE are both set; set only one")
    if agent.mqtt_password_file and not Path(agent.mqtt_password_file).is_file():
        raise ConfigError(f"MQTT_PASSWORD_FILE={agent.mqtt_password_file!r} is not a readable file")
    if agent.control_api and not agent.health_port:
        raise ConfigError("CONTROL_API=true needs HEALTH_PORT (the port it is served on); set HEALTH_PORT=8090, say")
    if agent.reconnect_backoff_initial > agent.reconnect_backoff_max:
        raise ConfigError(
            f"RECONNECT_BACKOFF_INITIAL={agent.reconnect_backoff_initial} is larger than "
            f"RECONNECT_BACKOFF_MAX={agent.reconnect_backoff_max}"
        )
    config = Config(agent=agent, models=model_settings, streams=streams, using_sample=using_sample)
    if agent.mqtt_host:
        try:
            mqtt_config(config)
        except EdgeAgentError as exc:
            raise ConfigError(f"MQTT settings: {exc}") from None
    return config


def source_options(stream: StreamConfig, config: Config) -> SourceOptions:
    agent = config.agent
    return SourceOptions(
        mode=stream.mode,
        loop=stream.loop,
        max_fps=stream.max_fps,
        stall_timeout=agent.stream_stall_timeout,
        open_timeout=agent.stream_open_timeout,
        read_timeout=agent.stream_read_timeout,
        backoff_initial=agent.reconnect_backoff_initial,
        backoff_max=agent.reconnect_backoff_max,
        rtsp_transport=stream.rtsp_transport,
        video_size=stream.video_size,
        framerate=stream.framerate,
        input_format=stream.input_format,
        tls_verify=stream.tls_verify,
        tls_ca_file=stream.tls_ca_file,
    )


def mqtt_config(config: Config) -> MqttConfig:
    agent = config.agent
    assert agent.mqtt_host is not None
    return MqttConfig(
        host=agent.mqtt_host,
        port=agent.mqtt_port,
        username=agent.mqtt_username,
        password=agent.mqtt_password.get_secret_value() if agent.mqtt_password else None,
        password_file=agent.mqtt_password_file,
        tls=agent.mqtt_tls,
        tls_ca=agent.mqtt_tls_ca,
        tls_cert=agent.mqtt_tls_cert,
        tls_key=agent.mqtt_tls_key,
        tls_insecure=agent.mqtt_tls_insecure,
        qos=agent.mqtt_qos,
        topic_prefix=agent.mqtt_topic_prefix,
        agent_id=agent.agent_id,
        keepalive=agent.mqtt_keepalive,
        protocol=agent.mqtt_protocol,
        message_expiry_s=agent.mqtt_message_expiry or None,
        queue_size=agent.mqtt_queue_size,
        ha_discovery=agent.mqtt_ha_discovery,
    )


def redacted(config: Config) -> dict[str, Any]:
    """The resolved configuration as printed by ``edge-agent config``: secrets never shown."""

    def dump(settings: BaseSettings) -> dict[str, Any]:
        out = {}
        for name, value in settings.model_dump().items():
            if isinstance(value, SecretStr) or (value is not None and ("password" in name or "api_key" in name)):
                value = "***" if value else value
            if name == "streams" and isinstance(value, str):
                value = _redact_url(value)
            out[name.upper()] = value
        return out

    return {
        "agent": dump(config.agent),
        "models": dump(config.models),
        "streams": [
            {k: v for k, v in s.__dict__.items()} | {"url": _redact_url(s.url)} for s in config.streams
        ],
        "sinks": (["mqtt"] if config.agent.mqtt_host else []) + (["stdout"] if config.stdout_enabled else []),
    }


def _redact_url(url: str) -> str:
    """rtsp://user:secret@host/ -> rtsp://user:***@host/"""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)
