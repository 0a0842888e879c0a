"""Perception Encoder (``perception_encoder/PE-Core-{B16-224,L14-336,G14-448}``): image and text
embeddings, compare and zero-shot, like CLIP.

Weights: Roboflow's ``model.pt`` (Meta's state dict), from the legacy ``/core_model`` directory
or the current stack's package (``perception-encoder/<variant>``: ``config.json`` naming the
variant + ``model.pt``), loaded into :mod:`.pe_network`. Images are squashed to the variant's
square size (bilinear; area averaging when shrinking, as PIL's antialiased resize), RGB, mean and
std 0.5. Texts go through CLIP's BPE tokenizer (instant-clip-tokenizer, the ``clip`` extra) into
the variant's context (32 or 72 tokens; longer texts are cut, the end token kept, as Meta does).
Embeddings are L2-normalised (Roboflow returns them so); compare is their cosine; zero-shot
probabilities are the softmax of the checkpoint's own logit scale times the cosine.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.models.common.errors import InvalidInputError, MissingExtraError, ModelArtifactsError
from edge_agent.models.common.settings import ModelSettings
from edge_agent.models.foundation.base import FoundationModel
from edge_agent.models.foundation.clip import check_prompts
from edge_agent.models.foundation.torch_support import device_and_dtype
from edge_agent.models.maths.predictions import Embeddings, Prediction, ZeroShotClassification

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
PE_MEAN = (0.5, 0.5, 0.5)
PE_STD = (0.5, 0.5, 0.5)
START_TOKEN, END_TOKEN = 49406, 49407
_TEXT_CACHE_SIZE = 1024


def pe_preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """One BGR uint8 image -> (3, size, size) float32: squashed (no crop), RGB, (x / 255 - 0.5) / 0.5."""
    height, width = image.shape[:2]
    shrink = size < width or size < height
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    rgb = resized[:, :, ::-1].astype(np.float32) / 255.0
    normalized = (rgb - np.asarray(PE_MEAN, np.float32)) / np.asarray(PE_STD, np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1))


def pack_tokens(encoded: Sequence[Sequence[int]], context: int) -> np.ndarray:
    """(N, context) int64: start, tokens, end, zeros; a text too long is cut and ends with the end token."""
    out = np.zeros((len(encoded), context), np.int64)
    for row, ids in enumerate(encoded):
        tokens = [START_TOKEN, *ids, END_TOKEN]
        if len(tokens) > context:
            tokens = tokens[:context]
            tokens[-1] = END_TOKEN
        out[row, : len(tokens)] = tokens
    return out


def softmax_scaled(similarities: np.ndarray, scale: float) -> np.ndarray:
    logits = scale * np.asarray(similarities, np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def variant_of(directory: Path, fallback: str) -> str:
    """The variant a package's config.json names (``vision_encoder_config``), else the id's."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        return fallback
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelArtifactsError(path, f"is not JSON ({exc})") from None
    name = content.get("vision_encoder_config") if isinstance(content, dict) else None
    return name if isinstance(name, str) else fallback


@dataclass(frozen=True)
class PEParams:
    prompts: tuple[str, ...] | None


class PerceptionEncoderModel(FoundationModel):
    """``predict`` gives :class:`Embeddings`, or :class:`ZeroShotClassification` with prompts (per
    call or per image via ``image_options``)."""

    stream_options = ("prompts",)

    def __init__(
        self, model_id: str, directory: Path, settings: ModelSettings, status: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(model_id, "embed", "perception_encoder")
        from edge_agent.models.engines.torch_runtime import import_torch
        from edge_agent.models.foundation import pe_network

        what = f"{model_id} (Perception Encoder)"
        torch = self.torch = import_torch(what)
        try:
            from instant_clip_tokenizer import Tokenizer
        except ImportError:
            raise MissingExtraError(what, "clip", "instant-clip-tokenizer") from None
        self._tokenizer: Any = Tokenizer()
        self.directory = directory
        self.settings = settings
        variant = variant_of(directory, model_id.split("/", 1)[1])
        heads = pe_network.VARIANT_HEADS.get(variant)
        if heads is None:
            raise ModelArtifactsError(
                directory, f"names PE variant {variant!r}; known: {', '.join(pe_network.VARIANT_HEADS)}"
            )
        path = directory / WEIGHTS_FILE
        try:
            state = pe_network.clean_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
            network = pe_network.build(state, heads)
            missing, unexpected = network.load_state_dict(state, strict=False)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelArtifactsError(path, f"is not a loadable PE-Core checkpoint ({exc})") from None
        if missing:
            raise ModelArtifactsError(path, f"lacks {len(missing)} PE-Core weights, e.g. {', '.join(missing[:3])}")
        self.ignored_keys = tuple(unexpected)  # Meta's checkpoints may carry extra heads
        self.device, self.dtype = device_and_dtype(settings, what)
        self.network = network.requires_grad_(False).to(self.device, self.dtype).eval()
        self.resolution = network.visual.grid * network.visual.patch
        self.context = int(network.positional_embedding.shape[0])
        self.logit_scale = float(self.network.logit_scale.float().exp())
        self.max_batch_size = settings.clip_max_batch_size  # Roboflow: CLIP_MAX_BATCH_SIZE images per embed
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()

    def tokens(self, texts: Sequence[str]) -> np.ndarray:
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"prompts must be strings, got {type(text).__name__}")
        return pack_tokens([self._tokenizer.encode(t) for t in texts], self.context)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), D) L2-normalised text embeddings; recent texts are remembered."""
        torch = self.torch
        texts = list(texts)
        with self._text_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        computed: dict[str, np.ndarray] = {}
        step = self.settings.clip_max_batch_size
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            tokens = torch.from_numpy(self.tokens(chunk)).to(self.device)
            with torch.inference_mode():
                vectors = self.network.encode_text(tokens).float().cpu().numpy()
            computed.update(zip(chunk, vectors, strict=True))
        with self._text_lock:
            self._text_cache.update(computed)
            out = []
            for text in texts:
                out.append(self._text_cache[text])
                self._text_cache.move_to_end(text)
            while len(self._text_cache) > _TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 0), np.float32)

    def inference_parameters(self, confidence: float | None = None, prompts: Any = None) -> PEParams:  # type: ignore[override]
        return PEParams(None if prompts is None else check_prompts(prompts))

    def preprocess(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        batch = np.stack([pe_preprocess(image, self.resolution) for image in images])
        return batch, [(image.shape[1], image.shape[0]) for image in images]

    def run(self, inputs: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            pixels = torch.from_numpy(inputs).to(self.device, self.dtype)
            return self.network.encode_image(pixels).float().cpu().numpy()

    def postprocess(self, outputs: np.ndarray, metas: list[Any], params: PEParams) -> list[Prediction]:
        results: list[Prediction] = []
        for vector, (size, options) in zip(outputs, metas, strict=True):
            prompts = check_prompts(options["prompts"]) if "prompts" in options else params.prompts
            if not prompts:
                results.append(Embeddings(vector=vector.astype(np.float32), image_size=size))
                continue
            similarities = (self.embed_text(prompts) @ vector).astype(np.float32)  # both unit length: cosine
            results.append(
                ZeroShotClassification(
                    prompts=prompts,
                    similarities=similarities,
                    probabilities=softmax_scaled(similarities, self.logit_scale),
                    image_size=size,
                )
            )
        return results

    def compare(self, image: Any, prompts: Sequence[str]) -> list[float]:
        """Roboflow's ``/perception_encoder/compare``: cosine similarity of the image with each prompt."""
        (prediction,) = self.predict([image], prompts=list(prompts))
        return prediction.similarities.tolist()  # type: ignore[attr-defined]

    def make_response(self, prediction: Prediction) -> Any:
        from edge_agent.models.foundation.responses import response_of

        return response_of(prediction)
