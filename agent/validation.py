"""The one validation step that ``edge-agent config`` and ``edge-agent run`` share.

Everything that can be known without loading a model or opening a stream is checked here, so
that ``config`` exits 2 for every value ``run`` would refuse at start: stream URLs and their
options against the kind of source, model ids, the MQTT settings, the execution providers this
onnxruntime offers, and the health server's address. The control API checks a new stream with
:func:`prepare_stream`, the same function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.agent.errors import ConfigError
from edge_agent.models.common.errors import EdgeAgentError
from edge_agent.models.common.redaction import redact_url
from edge_agent.pipelines.sources.options import SourceOptions
from edge_agent.pipelines.sources.spec import SourceSpec
from edge_agent.pipelines.stream_config import StreamConfig, env_name

if TYPE_CHECKING:
    from edge_agent.agent.settings import Config
    from edge_agent.models.common.settings import ModelSettings


def source_options(stream: StreamConfig, config: Config) -> SourceOptions:
    """The reader's options for ``stream``: its own plus the agent-wide timings."""
    agent = config.agent
    return stream.source_options(
        stall_timeout=agent.stream_stall_timeout,
        open_timeout=agent.stream_open_timeout,
        read_timeout=agent.stream_read_timeout,
        backoff_initial=agent.reconnect_backoff_initial,
        backoff_max=agent.reconnect_backoff_max,
    )


def check_model_id(
    model_id: str, var: str, streams: list[str] | None = None, settings: ModelSettings | None = None
) -> None:
    """Refuse a model id that cannot be parsed (``../../etc/passwd``, a missing directory) and, with
    ``settings``, a fine-tuned id Roboflow's API would refuse for want of an API key."""
    from edge_agent.models.identity.ids import parse_model_id
    from edge_agent.models.resolution.credentials import check_api_key
    from edge_agent.models.speed.precision import split_precision

    try:
        ref = parse_model_id(split_precision(model_id)[0])  # "coco/3@int8": the suffix is the precision
        if settings is not None:
            check_api_key(ref, settings.api_key, settings)
    except EdgeAgentError as exc:
        users = f" (streams: {', '.join(streams)})" if streams else ""
        raise ConfigError(f"{var}={redact_url(model_id)!r}{users} is invalid: {exc}") from None


def prepare_source(stream: StreamConfig, config: Config, label: str = "stream") -> tuple[SourceSpec, SourceOptions]:
    """The parsed URL and reader options of ``stream``; :class:`ConfigError` naming the stream."""
    try:
        spec = SourceSpec.parse(stream.url)
        options = source_options(stream, config)
        options.validate_for(spec)
    except EdgeAgentError as exc:
        raise ConfigError(f"{label} {stream.name!r}: {exc}") from None
    return spec, options


def prepare_stream(stream: StreamConfig, config: Config, label: str = "stream") -> tuple[SourceSpec, SourceOptions]:
    """:func:`prepare_source`, and the stream's own model id checked."""
    prepared = prepare_source(stream, config, label)
    if stream.model_id and stream.model_id != config.agent.model_id:  # MODEL_ID is checked as such
        check_model_id(stream.model_id, f"STREAM_{env_name(stream.name)}_MODEL_ID", [stream.name], config.models)
    if stream.second_model_id:
        check_model_id(
            stream.second_model_id, f"STREAM_{env_name(stream.name)}_SECOND_MODEL_ID", [stream.name], config.models
        )
    return prepared


def check_providers(config: Config) -> list[str]:
    """The execution providers the models will get; ConfigError for a name onnxruntime does not
    know, a list none of which this box offers, or TENSORRT_ENABLED without TensorRT."""
    import onnxruntime as ort

    from edge_agent.models.engines.providers import resolve_providers

    settings = config.models
    try:
        return resolve_providers(
            settings.execution_providers,
            ort.get_available_providers(),
            ort.get_all_providers(),
            settings.tensorrt_enabled,
        )
    except EdgeAgentError as exc:
        raise ConfigError(str(exc)) from None


def _cross_checks(config: Config) -> None:
    agent = config.agent
    if agent.mqtt_password is not None and agent.mqtt_password_file:
        raise ConfigError("MQTT_PASSWORD and MQTT_PASSWORD_FILE are both set; set only one")
    if agent.mqtt_password_file is not None and not agent.mqtt_password_file.strip():
        raise ConfigError("MQTT_PASSWORD_FILE is set but empty; give the file's path or unset it")
    _check_http_access(config)
    if agent.control_api and not agent.health_port:
        raise ConfigError("CONTROL_API=true needs HEALTH_PORT (the port it is served on); set HEALTH_PORT=8090, say")
    if agent.mqtt_reconnect_min > agent.mqtt_reconnect_max:
        raise ConfigError(
            f"MQTT_RECONNECT_MIN={agent.mqtt_reconnect_min} is larger than "
            f"MQTT_RECONNECT_MAX={agent.mqtt_reconnect_max}"
        )
    if agent.reconnect_backoff_initial > agent.reconnect_backoff_max:
        raise ConfigError(
            f"RECONNECT_BACKOFF_INITIAL={agent.reconnect_backoff_initial} is larger than "
            f"RECONNECT_BACKOFF_MAX={agent.reconnect_backoff_max}"
        )


def _check_http_access(config: Config) -> None:
    """A readable, usable HTTP_TOKEN; none needed only while the HTTP port stays on loopback."""
    from edge_agent.agent.config_views import http_token
    from edge_agent.agent.web.access import is_loopback_host

    agent = config.agent
    if agent.health_port and http_token(agent) is None and not is_loopback_host(agent.health_host):
        raise ConfigError(
            f"HEALTH_HOST={agent.health_host!r} is not a loopback address and HTTP_TOKEN is not set: the live view, "
            "control API and metrics would be open to the network. Set HTTP_TOKEN (or HTTP_TOKEN_FILE), or bind "
            "HEALTH_HOST=127.0.0.1"
        )


def _check_int8_copies(config: Config) -> None:
    """Each model to run as int8 whose weights are on disk has a usable copy (its record), as ``run``
    will find when it loads the model."""
    from edge_agent.models.resolution.int8_check import check_int8_copy

    users: dict[str, list[str]] = {}
    for stream in config.streams:
        users.setdefault(config.model_of(stream), []).append(stream.name)
    for model_id, streams in users.items():
        try:
            check_int8_copy(model_id, config.models)
        except EdgeAgentError as exc:
            raise ConfigError(f"model {redact_url(model_id)!r} (streams: {', '.join(streams)}): {exc}") from None


def validate_config(config: Config) -> None:
    """Raise :class:`ConfigError` (one line naming the culprit) for anything ``run`` would refuse."""
    from edge_agent.agent.config_views import mqtt_config
    from edge_agent.agent.web.listen import check_health_address

    _cross_checks(config)
    agent = config.agent
    users = [s.name for s in config.streams if config.model_of(s) == agent.model_id]
    check_model_id(agent.model_id, "MODEL_ID", users, config.models)
    label = "stream" if config.using_sample else "STREAMS: stream"
    from edge_agent.agent.vlm_streams import vlm_model_of

    for stream in config.streams:
        prepare_stream(stream, config, label)
        vlm_id = vlm_model_of(stream, config)
        if vlm_id is not None:
            check_model_id(vlm_id, "VLM_MODEL_ID", [stream.name], config.models)
    _check_int8_copies(config)
    if agent.mqtt_host:
        try:
            mqtt_config(config)
        except EdgeAgentError as exc:
            raise ConfigError(f"MQTT settings: {exc}") from None
    check_providers(config)
    if agent.health_port:
        check_health_address(agent.health_host)


__all__ = ["check_model_id", "check_providers", "prepare_stream", "source_options", "validate_config"]
