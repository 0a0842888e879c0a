"""Errors of the service layer."""

from __future__ import annotations

from models.errors import EdgeAgentError


class ConfigError(EdgeAgentError):
    """An environment variable has a value the agent cannot use.

    The message names the variable, what is wrong with the value and what is accepted; the CLI
    prints it and exits with status 2.
    """
