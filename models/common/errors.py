"""The exception hierarchy shared by every layer.

Every error a user can meet derives from :class:`EdgeAgentError` and carries a message that says
what to do about it. ``pipelines`` and ``agent`` subclass these; ``models`` is the lowest layer, so
the base lives here.
"""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose.

    ``permanent`` says whether a retry or a restart could help: True for a bad value, a wrong id,
    unusable files (the agent exits 2 and systemd does not restart it), False for network trouble
    or a busy lock (exit 1: systemd restarts). A subclass sets it; a raise site may override it on
    the instance when the same type is permanent in one place and transient in another.
    """

    permanent: bool = False


class ModelError(EdgeAgentError):
    """Anything about resolving, fetching, caching or running a model."""


class InvalidModelIdError(ModelError):
    """The model id is malformed or would escape the cache directory."""

    permanent = True


class ModelNotFoundError(ModelError):
    """The id is well formed but no such model exists (API 404, missing local dir, ...)."""

    permanent = True


class ModelDisabledError(ModelError):
    """The model family is switched off by an env flag; the message names the flag."""

    permanent = True


class UnsupportedModelTypeError(ModelError):
    """No model class is registered for the (task_type, model_type) pair."""

    permanent = True


class ApiAuthError(ModelError):
    """The API refused the key (401/403) or a key is needed and none was given."""

    permanent = True


class ModelDownloadError(ModelError):
    """The API or artifact server failed after retries, stalled, or sent bad data."""


class ModelNotCachedError(ModelError):
    """OFFLINE_MODE is on and the model is not (completely) in the cache."""

    permanent = True


class CacheIntegrityError(ModelError):
    """A cached artifact failed its size/hash/format check."""


class ModelRuntimeError(ModelError):
    """onnxruntime could not load or run the model (bad providers, bad graph, ...)."""


class InvalidInputError(ModelError):
    """An image or an inference parameter handed to a model cannot be used."""

    permanent = True


class ExecutionProviderError(ModelRuntimeError):
    """ONNXRUNTIME_EXECUTION_PROVIDERS names a provider this onnxruntime build does not know/offer."""

    permanent = True


class CacheLockTimeoutError(ModelError):
    """Another process held the model's cache lock for too long (a stuck download?)."""


class ModelSettingsError(ModelError):
    """An environment variable of the model layer has a value that cannot be used."""

    permanent = True


class CacheWriteError(ModelError):
    """MODEL_CACHE_DIR cannot be written (permissions, read-only file system, disk full)."""


class ModelLayoutError(ModelError):
    """The model's outputs do not have the shapes of the layout its (task, type) is registered as.

    Raised when the model loads, never while frames run, so a wrong ``model_type`` is a start-up
    error and not silently wrong detections.
    """

    permanent = True

    def __init__(self, model_id: str, layout: str, expected: str, got: list[tuple[str, list[object]]], hint: str = ""):
        self.model_id = model_id
        self.layout = layout
        self.expected = expected
        self.got = got
        shapes = ", ".join(f"{name} {shape}" for name, shape in got) or "no outputs"
        message = (
            f"{model_id} is registered as the {layout} layout, which expects {expected}, but the model's "
            f"outputs are: {shapes}"
        )
        if hint:
            message += f". {hint}"
        super().__init__(message)


class ModelArtifactsError(ModelError):
    """A model directory's metadata (environment.json, class names, keypoints) is missing or unusable."""

    permanent = True

    def __init__(self, path: object, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MissingExtraError(UnsupportedModelTypeError):
    """The model needs an optional runtime (an ``edge-agent[extra]``) that is not installed.

    Permanent like every UnsupportedModelTypeError: no restart installs a package.
    """

    def __init__(self, what: str, extra: str, module: str):
        self.what = what
        self.extra = extra
        self.module = module
        super().__init__(
            f"{what} needs the optional {module!r} package, which is not installed; install it with "
            f"pip install 'edge-agent[{extra}]'"
        )


class ChecksumMismatchError(ModelDownloadError):
    """A downloaded file's md5 differs from the one the registry gave; the file was refused."""

    def __init__(self, what: str, expected: str, got: str):
        self.what = what
        self.expected = expected
        self.got = got
        super().__init__(
            f"{what}: md5 {got} does not match the registry's {expected}; the file was refused and "
            f"nothing of it was kept in the cache"
        )


class NoSuitablePackageError(UnsupportedModelTypeError):
    """None of a model's packages can run on this box (each one's reason is listed)."""

    def __init__(self, model_id: str, reasons: list[tuple[str, str]]):
        self.model_id = model_id
        self.reasons = reasons
        listed = "; ".join(f"{pkg}: {why}" for pkg, why in reasons) or "the registry lists no packages"
        super().__init__(
            f"no package of {model_id} can run on this box ({listed}). MODEL_PACKAGE_ID, "
            f"MODEL_PACKAGE_BACKENDS and MODEL_PACKAGE_QUANTIZATION steer the choice"
        )


class Int8CopyMissingError(ModelNotFoundError):
    """INT8 was asked for but the model has no usable INT8 copy; the message names the command that makes one."""

    def __init__(self, model_id: str, message: str):
        self.model_id = model_id
        super().__init__(message)


class QuantizationError(ModelError):
    """``edge-agent models quantize`` cannot make an INT8 copy of this model."""


class CalibrationSourceError(QuantizationError):
    """The calibration clip, folder or stream cannot be read or holds too few frames."""


class AccuracyGuardError(QuantizationError):
    """The INT8 copy scored below the threshold against fp32 (or could not be scored) and was not activated."""

    def __init__(self, model_id: str, map50: float | None, threshold: float, record_path: object, message: str):
        self.model_id = model_id
        self.map50 = map50
        self.threshold = threshold
        self.record_path = record_path
        super().__init__(message)
