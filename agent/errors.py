"""Errors of the service layer, and the exit codes they map to.

Exit codes are a contract with systemd (``RestartPreventExitStatus=2``) and with scripts:

* 0: a clean stop (SIGTERM, Ctrl-C, ``--seconds``, every file played, stdout closed by its reader);
* 2: a configuration error or a permanent model error: no restart can fix it, systemd gives up;
* 1: a transient failure (network, a busy lock, a crash): systemd restarts the agent.

The code comes from the exception's type (:attr:`EdgeAgentError.permanent`), never from its text.
"""

from __future__ import annotations

from edge_agent.models.common.errors import EdgeAgentError

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2


def exit_code_for(exc: BaseException) -> int:
    """2 for what no restart fixes, 1 for everything else that went wrong."""
    if isinstance(exc, EdgeAgentError) and exc.permanent:
        return EXIT_PERMANENT
    return EXIT_TRANSIENT


class ConfigError(EdgeAgentError):
    """An environment variable (or a control API request) has a value the agent cannot use.

    The message names the variable, what is wrong with the value and what is accepted; the CLI
    prints it and exits with status 2.
    """

    permanent = True


class StreamExistsError(ConfigError):
    """A stream of that name runs already (the control API answers 409)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"stream {name!r} exists already; remove it first")


class UnknownStreamError(EdgeAgentError):
    """No stream has that name (the control API answers 404)."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"no stream named {name!r}; streams: {', '.join(known) or 'none'}")


class ModelLoadError(EdgeAgentError):
    """A model could not be loaded; permanent or transient as its cause is."""

    def __init__(self, model_id: str, streams: list[str], cause: EdgeAgentError) -> None:
        self.model_id = model_id
        self.streams = streams
        self.cause = cause
        self.permanent = cause.permanent
        super().__init__(f"model {model_id!r} (streams: {', '.join(streams) or 'none yet'}): {cause}")


class StopRequested(EdgeAgentError):
    """SIGTERM/SIGINT arrived while something was still starting (a model loading, say)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"the agent is stopping ({what} was interrupted)")


class NoStreamLeftError(EdgeAgentError):
    """Every stream has ended and every one of them failed: nothing can produce frames."""

    permanent = True  # files that cannot be read do not heal by a restart

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        details = "; ".join(f"{name}: {why}" for name, why in failed.items())
        super().__init__(f"no stream can produce frames: every stream failed ({details})")
