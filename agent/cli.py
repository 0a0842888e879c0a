"""``edge-agent`` command line: run, config, infer, models.

Exit codes (``agent.errors``): 0 clean stop, 2 configuration or permanent model error (systemd
does not restart: ``RestartPreventExitStatus=2``), 1 transient failure (systemd restarts). Every
error is one line on stderr naming the culprit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from edge_agent.agent.errors import EXIT_OK, EXIT_PERMANENT, ConfigError, exit_code_for
from edge_agent.models.common.errors import EdgeAgentError

log = logging.getLogger("edge_agent.cli")

EXIT_CONFIG = EXIT_PERMANENT


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edge-agent")
    except Exception:
        return "unknown"


def _cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.agent.logs import setup_logging
    from edge_agent.agent.settings import load_config, secrets_of
    from edge_agent.agent.supervisor import Supervisor
    from edge_agent.models.common.settings import set_model_settings

    config = load_config()
    # The model layer must see the very settings that were validated and printed, not re-read them.
    set_model_settings(config.models)
    setup_logging(config.agent.log_level, config.agent.log_format, secrets=secrets_of(config))
    for warning in config.warnings:
        log.warning("%s", warning)
    supervisor = Supervisor(config, run_seconds=args.seconds)
    return asyncio.run(supervisor.run())


def _cmd_config(args: argparse.Namespace) -> int:
    from edge_agent.agent.settings import load_config, redacted
    from edge_agent.pipelines.sinks.encoding import to_json

    config = load_config()
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(to_json(redacted(config), indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="Video streams in, detections out. Configured by environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {_version()}")
    subparsers = parser.add_subparsers(dest="command")

    run = subparsers.add_parser("run", help="run the agent (STREAMS, MODEL_ID, MQTT_HOST, ...)")
    run.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    run.set_defaults(handler=_cmd_run)

    config = subparsers.add_parser("config", help="print the resolved configuration, secrets redacted")
    config.set_defaults(handler=_cmd_config)

    from edge_agent.agent import cli_models

    cli_models.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(handler(args) or 0)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except EdgeAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:  # Ctrl-C before the agent's own handler was installed: a clean stop
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
