"""Environment settings of the model layer.

Read once through :func:`get_model_settings` where a model, a session or a download is created;
nothing else in ``models`` reads ``os.environ``. Names and meanings follow Roboflow Inference where
both have the same knob, so an existing deployment's environment keeps working.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edge_agent.models.common.errors import ModelSettingsError

# Short spellings accepted in ONNXRUNTIME_EXECUTION_PROVIDERS, mapped to onnxruntime's names.
PROVIDER_SHORT_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def parse_provider_list(value: str) -> list[str]:
    """Parse a provider list given as JSON (``["A", "B"]``), Roboflow's ``[A,B]`` or ``A,B``.

    Short names (``cuda``, ``tensorrt``, ``cpu``, ...) become onnxruntime's full names; whether the
    names exist in the installed onnxruntime is checked where the session is created.
    """
    text = value.strip()
    names: list[Any]
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            # Roboflow's own default is written without quotes: [TensorrtExecutionProvider,...]
            names = text[1:-1].split(",") if text.endswith("]") else text[1:].split(",")
        if not isinstance(names, list):
            raise ValueError("expected a list of provider names")
    else:
        names = text.split(",")
    out: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise ValueError(f"provider names must be strings, got {raw!r}")
        name = raw.strip().strip("'\"").strip()
        if not name:
            continue
        out.append(PROVIDER_SHORT_NAMES.get(name.lower(), name))
    if not out:
        raise ValueError(
            "no provider named; give a comma list or JSON list such as "
            "'CUDAExecutionProvider,CPUExecutionProvider' or '[\"cpu\"]'"
        )
    return out


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true is not 1.0
        raise ValueError(f"must be a number between 0 and 1 (e.g. 0.4), got {value!r}")
    return value


def _unit_interval(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a number between 0 and 1 (e.g. 0.4), got {value}")
    return value


# A threshold in [0, 1], 0 and 1 included: the one definition that CONFIDENCE, IOU_THRESHOLD and
# the per-stream STREAM_<NAME>_CONFIDENCE share, so that they accept the same values.
UnitInterval = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_unit_interval)]

# onnxruntime starts this many threads per model when asked: more than a few per core only
# costs memory and start-up time (a huge value took minutes and could not be interrupted).
THREADS_PER_CORE_LIMIT = 4


def max_ort_threads() -> int:
    return THREADS_PER_CORE_LIMIT * (os.cpu_count() or 1)


class ModelSettings(BaseSettings):
    """Settings of the model layer, one environment variable per field (names are upper case)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", populate_by_name=True, protected_namespaces=(), allow_inf_nan=False
    )

    model_cache_dir: Path = Field(
        default=Path("~/.cache/edge-agent/models"),
        description="Directory of downloaded model artifacts, laid out <project>/<version>/ like "
        "Roboflow Inference's MODEL_CACHE_DIR, so the two can share one cache.",
    )
    api_base_url: str = Field(
        default="https://api.roboflow.com",
        description="Base URL of the Roboflow API that describes models (/ort/{project}/{version}).",
    )
    api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ROBOFLOW_API_KEY", "API_KEY"),
        description="Roboflow API key for fine-tuned and Universe models (ROBOFLOW_API_KEY, or API_KEY "
        "as Roboflow Inference calls it). Never logged.",
        repr=False,
    )
    device_id: str | None = Field(
        default=None,
        description="Device id reported to the Roboflow API with each model request; the host name when unset.",
    )
    offline_mode: bool = Field(
        default=False,
        description="Never touch the network: models must already be in MODEL_CACHE_DIR, be a "
        "local directory or be built in.",
    )
    onnxruntime_execution_providers: str | None = Field(
        default=None,
        description="Execution providers to use, in order, as a comma list or JSON list "
        "(e.g. 'CUDAExecutionProvider,CPUExecutionProvider' or 'cuda,cpu'). Unset: TensorRT (only "
        "with TENSORRT_ENABLED) -> CUDA -> OpenVINO -> CoreML -> CPU, whichever onnxruntime offers.",
    )
    tensorrt_enabled: bool = Field(
        default=False,
        description="Put TensorRT first in the automatic provider order. Off by default: the first "
        "engine build of a model can take ~10 minutes on a Jetson Orin and uses extra memory; engines "
        "are cached under MODEL_CACHE_DIR/.tensorrt so later starts are quick.",
    )
    tensorrt_fp16: bool = Field(
        default=True,
        description="Let TensorRT build FP16 engines (faster on Jetson/Tensor cores, tiny accuracy change).",
    )
    model_precision: Literal["fp32", "int8", "auto"] = Field(
        default="auto",
        description="Weights every model runs: fp32, int8 (the INT8 copy `edge-agent models quantize ID` "
        "made; an error when there is none) or auto (the INT8 copy when one exists, passed its accuracy "
        "check and the execution provider runs it faster, else fp32). Per model: an id suffix such as "
        "yolov8n-640@int8; per stream: STREAM_<NAME>_MODEL_PRECISION.",
    )
    openvino_device_type: str = Field(
        default="CPU",
        description="OpenVINO device the OpenVINO execution provider compiles for: CPU, GPU, GPU.0, NPU, "
        "or AUTO:GPU,CPU / HETERO:GPU,CPU (needs the openvino extra, see the README).",
    )
    openvino_cache_enabled: bool = Field(
        default=True,
        description="Keep OpenVINO's compiled models under MODEL_CACHE_DIR/.openvino so only the first "
        "start of a model pays the compile (long on GPU/NPU).",
    )
    ort_intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime intra-op threads per run (0 = automatic: cores / MODEL_CONCURRENCY when several "
        "runs are in flight on the CPU provider, else onnxruntime's default of one per core; at most 4 per core); "
        "also OpenVINO's thread count. With one run in flight, one thread on a 2-core box cost 30-40% throughput.",
    )
    ort_inter_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime inter-op threads per model (0 = onnxruntime's default; at most 4 per core).",
    )
    ort_allow_spinning: bool = Field(
        default=True,
        description="Let onnxruntime's worker threads spin between operators (its default). Spinning "
        "lowers model latency on an idle box but burns cores that decoders and other models could use "
        "(off: -6% throughput on the CPU provider with one stream on 2 cores, no change on OpenVINO).",
    )
    model_concurrency: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Batches of one model that run at once (0 = auto: 2 on the CPU execution provider with 2+ "
        "cores, each run on cores/2 intra-op threads unless ORT_INTRA_OP_THREADS is set; 1 on GPU and OpenVINO). "
        "Two single-threaded runs use a small CPU better than one two-threaded run (+15-28% frames on 2 "
        "cores) at the cost of a longer run per frame; 1 gives the lowest latency for a single camera.",
    )
    confidence: UnitInterval = Field(
        default=0.4, description="Default minimum class score a detection must exceed (0..1)."
    )
    iou_threshold: UnitInterval = Field(
        default=0.3,
        description="Default IoU above which non-max suppression drops the lower-scored box (0..1).",
    )
    max_detections: int = Field(
        default=300, ge=1, description="Default maximum number of detections returned per image."
    )
    max_candidates: int = Field(
        default=3000, ge=1, description="Default maximum number of boxes (best first) that enter NMS."
    )
    class_agnostic_nms: bool = Field(
        default=False,
        description="Default NMS mode: true suppresses overlapping boxes of different classes too.",
    )
    max_batch_size: int = Field(
        default=16,
        ge=1,
        description="Largest batch sent to a model whose ONNX batch axis is dynamic; bigger lists "
        "are split into chunks of this size. Unset, the stream agent batches up to 4 frames on the CPU "
        "provider with one run in flight and 1 frame per run with several (MODEL_CONCURRENCY).",
    )
    max_active_models: int = Field(default=8, ge=1, description="How many models the model manager keeps loaded (LRU).")
    model_download_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a model download or API request may go without receiving data before it is retried.",
    )
    model_download_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a TCP/TLS connection to the API."
    )
    model_download_retries: int = Field(
        default=4,
        ge=0,
        description="Retries after a transient failure (timeouts, connection errors, HTTP "
        "408/429/5xx), with exponential backoff and Retry-After honoured up to 60 s.",
    )
    model_download_backoff: float = Field(
        default=1.0, ge=0, description="First retry delay in seconds; doubles on each retry (max 30 s)."
    )
    model_cache_lock_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Seconds to wait for another process that is downloading/clearing the same model.",
    )
    core_models_enabled: bool = Field(default=True, description="Allow foundation (family/variant) models at all.")
    core_model_clip_enabled: bool = Field(default=True, description="Allow clip/* models.")
    core_model_sam_enabled: bool = Field(default=True, description="Allow sam/* models.")
    core_model_sam2_enabled: bool = Field(default=True, description="Allow sam2/* models.")
    sam_version_id: str = Field(
        default="vit_h", description="SAM variant of a bare `sam` model id (vit_b, vit_l, vit_h)."
    )
    sam2_version_id: str = Field(
        default="hiera_large",
        description="SAM2 variant of a bare `sam2` model id (hiera_tiny, hiera_small, hiera_b_plus, hiera_large).",
    )
    owlv2_version_id: str = Field(
        default="owlv2-large-patch14-ensemble",
        description="OWLv2 variant of a bare `owlv2` model id (google/<variant> in the Hugging Face cache).",
    )
    core_model_gaze_enabled: bool = Field(default=True, description="Allow gaze/* models.")
    core_model_doctr_enabled: bool = Field(default=True, description="Allow doctr/* models.")
    core_model_easyocr_enabled: bool = Field(default=True, description="Allow easy_ocr/* models.")
    core_model_trocr_enabled: bool = Field(default=True, description="Allow trocr/* models.")
    core_model_groundingdino_enabled: bool = Field(default=True, description="Allow grounding_dino/* models.")
    core_model_yolo_world_enabled: bool = Field(default=True, description="Allow yolo_world/* models.")
    core_model_owlv2_enabled: bool = Field(
        default=False, description="Allow owlv2/* models (off by default, as in Roboflow Inference)."
    )
    core_model_pe_enabled: bool = Field(default=True, description="Allow perception_encoder/* models.")
    depth_estimation_enabled: bool = Field(
        default=True, description="Allow depth-anything-v2/* and depth-anything-v3/* models."
    )
    lmm_enabled: bool = Field(
        default=False,
        description="Allow large multimodal models (paligemma, smolvlm2, moondream2); off by default "
        "as in Roboflow Inference.",
    )
    paligemma_enabled: bool = Field(default=True, description="Allow paligemma/* (also needs LMM_ENABLED).")
    smolvlm2_enabled: bool = Field(default=True, description="Allow smolvlm2/* (also needs LMM_ENABLED).")
    moondream2_enabled: bool = Field(default=True, description="Allow moondream2/* (also needs LMM_ENABLED).")
    florence2_enabled: bool = Field(default=True, description="Allow Florence-2 models (also needs LMM_ENABLED).")
    qwen_2_5_enabled: bool = Field(default=True, description="Allow Qwen2.5-VL models (also needs LMM_ENABLED).")
    # -- vision-language models (issue 24) ----------------------------------------------------------
    vlm_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weights dtype of vision-language models: auto = float32 on the CPU, float16 on CUDA.",
    )
    vlm_max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="Most tokens a vision-language model writes per answer; unset = the family's default "
        "(Florence-2 1000, PaliGemma 400, Qwen2.5-VL 512, SmolVLM2 400).",
    )
    vlm_num_beams: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Beam search width of vision-language answers (1 = greedy, the cheapest on an edge box).",
    )
    vlm_quantization: Literal["auto", "4bit", "none"] = Field(
        default="auto",
        description="4-bit NF4 weights (bitsandbytes, CUDA only): auto = on CUDA when bitsandbytes is "
        "installed; 4bit = required; none = never.",
    )

    @field_validator("model_cache_dir", mode="before")
    @classmethod
    def _cache_dir_given(cls, value: Any) -> Any:
        # Path("") is ".", so an empty MODEL_CACHE_DIR= would quietly fill the working directory.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give a directory path, e.g. /var/lib/edge-agent/models, or unset it")
        return value

    # -- package registry, torch engine, foundation models (issue 13) ---------------------------
    model_registry: Literal["auto", "ort", "packages"] = Field(
        default="auto",
        description="Where fine-tuned models come from: ort = the legacy /ort API and "
        "<project>/<version>/ cache; packages = Roboflow's package registry "
        "(/models/v1/external/weights) and the inference-models cache (models-cache/, shared-blobs/); "
        "auto = whichever cache holds the model, else /ort, else the package registry when /ort has "
        "no answer for it.",
    )
    roboflow_api_host: str | None = Field(
        default=None,
        description="Base URL of the package registry (/models/v1/external/weights), as Roboflow's "
        "inference-models reads it; unset = API_BASE_URL.",
    )
    model_package_id: str | None = Field(
        default=None,
        description="Use exactly this package of a model (its packageId) instead of choosing one.",
    )
    model_package_backends: str | None = Field(
        default=None,
        description="Package backends allowed, best first, as a comma list (onnx, torch-script, trt); "
        "unset = every backend this box can run, in Roboflow's ranking.",
    )
    model_package_quantization: str | None = Field(
        default=None,
        description="Package quantizations allowed, as a comma list (fp32, fp16, bf16, int8, unknown); "
        "unset = Roboflow's default for the device (CPU: fp32, bf16, unknown; GPU: fp32, fp16, unknown).",
    )
    allow_untrusted_packages: bool = Field(
        default=False,
        description="Also consider packages the registry does not mark trustedSource (off, as in Roboflow).",
    )
    default_device: str = Field(
        default="auto",
        description="Device of the torch engine: auto (cuda when torch sees a GPU, else cpu), cpu, "
        "cuda or cuda:N. Also decides which packages fit this box.",
    )
    torch_fp16: bool = Field(
        default=False,
        description="Run TorchScript models in half precision on CUDA (ignored on the CPU).",
    )
    core_model_ppocr_enabled: bool = Field(default=True, description="Allow pp_ocr (PP-OCR) models.")
    foundation_dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Compute dtype of the torch foundation models (depth, TrOCR, Perception Encoder); "
        "auto = float32 on the CPU, float16 on CUDA.",
    )
    depth_detector_model_id: str | None = Field(
        default=None,
        description="Depth models on a stream: a detector run on the same frames, each of its boxes "
        "published with the median normalised depth inside it (1 = nearest). Unset: no boxes, only "
        "the live view's depth picture.",
    )
    ocr_detector_model_id: str | None = Field(
        default=None,
        description="TrOCR: a detector whose boxes are read, one line each (licence plates); unset = "
        "the whole image, or a stream's ROI regions.",
    )
    gaze_face_detector_model_id: str | None = Field(
        default=None,
        description="Gaze (gaze/L2CS): a face detector model id to find faces with; unset = OpenCV's "
        "frontal-face Haar cascade shipped with edge-agent (eye centres as landmarks).",
    )
    clip_max_batch_size: int = Field(
        default=8, ge=1, description="Texts per batch through CLIP's text encoder (as Roboflow's CLIP_MAX_BATCH_SIZE)."
    )

    @field_validator("model_cache_dir", mode="after")
    @classmethod
    def _expand_cache_dir(cls, value: Path) -> Path:
        text = str(value).strip()
        if not text:
            raise ValueError("MODEL_CACHE_DIR must be a directory path, e.g. /var/lib/edge-agent/models")
        if "\x00" in text:
            raise ValueError("MODEL_CACHE_DIR must not contain NUL characters")
        return Path(os.path.expandvars(text)).expanduser().absolute()

    @field_validator("api_base_url", mode="after")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"API_BASE_URL must start with http:// or https:// (e.g. https://api.roboflow.com), got {value!r}"
            )
        return value

    @field_validator("roboflow_api_host", mode="after")
    @classmethod
    def _check_api_host(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"ROBOFLOW_API_HOST must start with http:// or https://, got {value!r}")
        return value

    @field_validator("model_package_id", "model_package_backends", "model_package_quantization", mode="after")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value is not None and value.strip() else None

    @field_validator("default_device", mode="after")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower() or "auto"
        if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"DEFAULT_DEVICE must be auto, cpu, cuda or cuda:N, got {value!r}")

    @field_validator("api_key", "device_id", mode="after")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        return value or None

    @field_validator("onnxruntime_execution_providers", mode="after")
    @classmethod
    def _check_providers(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_provider_list(value)
        except ValueError as exc:
            raise ValueError(f"ONNXRUNTIME_EXECUTION_PROVIDERS: {exc}") from None
        return value

    @field_validator("model_precision", mode="before")
    @classmethod
    def _lower_precision(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("openvino_device_type", mode="after")
    @classmethod
    def _check_openvino_device(cls, value: str) -> str:
        text = value.strip().upper()
        device = r"(CPU|GPU(\.\d+)?|NPU)"
        if not re.fullmatch(rf"{device}|((AUTO|HETERO|MULTI):{device}(,{device})*)", text):
            raise ValueError(
                f"must be an OpenVINO device such as CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU or HETERO:GPU,CPU, "
                f"got {value!r}"
            )
        return text

    @field_validator("ort_intra_op_threads", "ort_inter_op_threads", mode="after")
    @classmethod
    def _bounded_threads(cls, value: int) -> int:
        limit = max_ort_threads()
        if value > limit:
            raise ValueError(
                f"must be 0 (onnxruntime's default) or at most {limit} ({THREADS_PER_CORE_LIMIT} per core of "
                f"this machine's {os.cpu_count() or 1}); onnxruntime starts that many threads per model"
            )
        return value

    @property
    def execution_providers(self) -> list[str] | None:
        """The parsed ONNXRUNTIME_EXECUTION_PROVIDERS, or None for the automatic order."""
        if self.onnxruntime_execution_providers is None:
            return None
        return parse_provider_list(self.onnxruntime_execution_providers)

    @property
    def package_api_host(self) -> str:
        """Where /models/v1/external/weights is asked: ROBOFLOW_API_HOST, else API_BASE_URL."""
        return self.roboflow_api_host or self.api_base_url

    @property
    def openvino_cache_dir(self) -> Path:
        """Where OpenVINO keeps compiled models: inside the model cache, like TensorRT engines."""
        return self.model_cache_dir / ".openvino"

    @property
    def tensorrt_cache_dir(self) -> Path:
        """Where TensorRT engines are cached: inside the model cache, so they persist with it."""
        return self.model_cache_dir / ".tensorrt"


def env_name(field_name: str) -> str:
    """The environment variable (first one, if several) that sets a :class:`ModelSettings` field."""
    info = ModelSettings.model_fields[field_name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    return field_name.upper()


def describe_settings() -> list[tuple[str, str, str]]:
    """(ENV_NAME, default as text, description) for every setting, for `edge-agent config`/README."""
    rows = []
    for name, info in ModelSettings.model_fields.items():
        default = info.default
        default_text = "" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((env_name(name), default_text, info.description or ""))
    return rows


def _format_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err.get("loc") else "?"
        name = env_name(field) if field in ModelSettings.model_fields else field.upper()
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        info = ModelSettings.model_fields.get(field)
        if info is not None and info.annotation is bool:
            message += " (accepted: true/false, 1/0, yes/no, on/off)"
        problems.append(f"{name}={err.get('input')!r}: {message}")
    return "invalid model settings in the environment: " + "; ".join(problems)


def load_model_settings(**overrides: Any) -> ModelSettings:
    """Build settings from the environment (plus explicit overrides), with a readable error."""
    try:
        return ModelSettings(**overrides)
    except ValidationError as exc:
        raise ModelSettingsError(_format_validation_error(exc)) from None


_installed: ModelSettings | None = None


@functools.lru_cache(maxsize=1)
def _from_environment() -> ModelSettings:
    return load_model_settings()


def get_model_settings() -> ModelSettings:
    """The process-wide settings: the installed ones, else read from the environment once."""
    if _installed is not None:
        return _installed
    return _from_environment()


def set_model_settings(settings: ModelSettings | None) -> None:
    """Install settings built elsewhere (e.g. the agent's validated config); None goes back to env."""
    global _installed
    _installed = settings


def reload_model_settings() -> ModelSettings:
    """Forget installed/cached settings and read the environment again (tests, config reload)."""
    global _installed
    _installed = None
    _from_environment.cache_clear()
    return get_model_settings()
