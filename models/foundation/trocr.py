"""TrOCR (``trocr/trocr-{small,base,large}-printed``): a single-line recogniser, image in, text out.

The checkpoint is a Hugging Face ``VisionEncoderDecoderModel`` directory with its image processor
and tokenizer: Roboflow's current stack serves it as a package; its legacy class pulled
``microsoft/trocr-*`` from the Hugging Face hub, into ``MODEL_CACHE_DIR/hf_home/hub`` (both are
read). Generation uses the checkpoint's own defaults; tokens are decoded without special tokens.
Images go in RGB (Roboflow's adapter passes its BGR array unflipped).

TrOCR reads one line: the whole image, each of a stream's ``regions`` (source pixels), or each
box of OCR_DETECTOR_MODEL_ID (licence plates: a plate detector finds them, TrOCR reads each; the
detector's boxes take the place of regions).
Each text's recognition score is the geometric mean of its tokens' probabilities; a box's confidence
is the detector's score, or 1 for a region (read whatever the stream's CONFIDENCE).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.common.errors import ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import WholeImageModel
from edge_agent.models.foundation.ocr import OCRParams, check_regions, ocr_parameters
from edge_agent.models.foundation.torch_support import device_and_dtype, import_runtime
from edge_agent.models.maths.predictions import Detections, Prediction, TextDetections
from edge_agent.models.tasks.model import Model

REQUIRED_FILES = ("config.json", "preprocessor_config.json")
HUB_ORG = "microsoft"


def hub_snapshot(variant: str, settings: ModelSettings) -> Path | None:
    """``microsoft/<variant>`` in the Hugging Face hub cache Roboflow's legacy stack fills, if there.

    HF_HUB_CACHE, else HF_HOME/hub, else MODEL_CACHE_DIR/hf_home/hub (Roboflow's defaults); the
    snapshot ``refs/main`` names, else the only one.
    """
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    roots.append(settings.model_cache_dir / "hf_home" / "hub")
    for root in roots:
        repo = root / f"models--{HUB_ORG}--{variant}"
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        candidates = [snapshots / ref.read_text().strip()] if ref.is_file() else sorted(snapshots.iterdir())
        for candidate in candidates:
            if all((candidate / name).is_file() for name in REQUIRED_FILES):
                return candidate
    return None


def crop_windows(width: int, height: int, boxes: Sequence[Sequence[float]] | None) -> list[tuple[int, int, int, int]]:
    """Integer pixel windows of xyxy boxes, clipped to the image (the whole image when None); empty ones dropped."""
    if boxes is None:
        return [(0, 0, width, height)]
    out = []
    for x1, y1, x2, y2 in boxes:
        window = (max(0, int(x1)), max(0, int(y1)), min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))
        if window[2] > window[0] and window[3] > window[1]:
            out.append(window)
    return out


@dataclass(frozen=True)
class LineTexts(TextDetections):
    """TrOCR's reading of one image: one line of text per window (whole image, region or detector box)."""

    seconds: float = 0.0

    def roboflow_response(self) -> dict[str, Any]:
        """``/ocr/trocr``: ``{result, time}``."""
        return {"result": self.result, "time": self.seconds}


class TrOCRModel(WholeImageModel):
    stream_options = ("regions",)

    def __init__(
        self,
        model_id: str,
        directory: Path,
        settings: ModelSettings,
        status: Callable[[str], None] | None = None,
        detector: Model | None = None,
    ) -> None:
        super().__init__(model_id, "ocr", "trocr")
        what = f"{model_id} (TrOCR)"
        transformers = import_runtime("transformers", what, "transformers")
        self.torch = import_runtime("torch", what, "transformers")
        self.directory = directory
        self.device, self.dtype = device_and_dtype(settings, what)
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            network = transformers.VisionEncoderDecoderModel.from_pretrained(
                str(directory), local_files_only=True, dtype=self.dtype
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelArtifactsError(directory, f"is not a loadable TrOCR checkpoint ({exc})") from None
        self.network = network.to(self.device).eval()
        self.detector = detector
        self.max_batch_size = settings.max_batch_size

    def inference_parameters(  # type: ignore[override]
        self, confidence: float | None = None, regions: Sequence[Sequence[float]] | None = None
    ) -> OCRParams:
        return ocr_parameters(confidence, regions)

    def pixel_values(self, crops: list[np.ndarray]) -> Any:
        """The processor's input tensor of BGR crops, fed RGB."""
        rgb = [np.ascontiguousarray(c[:, :, ::-1]) for c in crops]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"].to(self.device, self.dtype)

    def read_lines(self, crops: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
        """Text and confidence of each BGR crop (one line each)."""
        if not crops:
            return [], np.zeros(0, np.float32)
        torch = self.torch
        texts: list[str] = []
        scores: list[float] = []
        step = max(1, self.max_batch_size)
        for start in range(0, len(crops), step):
            pixels = self.pixel_values(crops[start : start + step])
            with torch.inference_mode():
                out = self.network.generate(pixels, output_scores=True, return_dict_in_generate=True)
                steps = self.network.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            sequences = out.sequences
            texts.extend(self.tokenizer.batch_decode(sequences, skip_special_tokens=True))
            # tokens generated after the decoder start; padding after an early end is not counted
            generated = sequences[:, -steps.shape[1] :]
            pad = self.network.generation_config.pad_token_id
            mask = torch.ones_like(generated, dtype=torch.bool) if pad is None else generated != pad
            logp = (steps.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
            scores.extend(torch.exp(logp).cpu().tolist())
        return texts, np.asarray(scores, np.float32)

    def predict_chunk(self, images: list[np.ndarray], options: list[dict[str, Any]], params: Any) -> list[Prediction]:
        found: list[Any] = [None] * len(images)
        if self.detector is not None:
            kwargs = {} if params.confidence is None else {"confidence": params.confidence}
            found = self.detector.predict(images, **kwargs)
        out: list[Prediction] = []
        for image, option, detections in zip(images, options, found, strict=True):
            started = time.perf_counter()
            height, width = image.shape[:2]
            regions = check_regions(option["regions"]) if "regions" in option else params.regions
            box_scores: np.ndarray | None = None
            if isinstance(detections, Detections):
                windows = crop_windows(width, height, detections.boxes.tolist())
                keep = [i for i, b in enumerate(detections.boxes.tolist()) if crop_windows(width, height, [b])]
                box_scores = detections.confidences[keep]
            else:
                windows = crop_windows(width, height, regions)
            texts, text_scores = self.read_lines([image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows])
            boxes = np.asarray(windows, np.float64).reshape(-1, 4)
            count = len(windows)
            prediction = LineTexts(
                boxes=boxes,
                # a region (or the whole image) is read whatever the stream's CONFIDENCE: its box is certain
                confidences=np.ones(count, np.float32) if box_scores is None else box_scores.astype(np.float32),
                texts=tuple(texts),
                text_confidences=text_scores,
                line_ids=np.arange(count, dtype=np.int64),
                image_size=(width, height),
                seconds=time.perf_counter() - started,
            )
            out.append(prediction if params.confidence is None else prediction.filter_confidence(params.confidence))
        return out

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
