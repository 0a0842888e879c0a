"""Moondream2 (revision 2025-06-21) in plain torch: the network and its ``detect`` path.

Written for edge-agent from the published architecture, so that the checkpoint's own Python files
(``hf_moondream.py`` and its helpers, which Roboflow imports from the model cache) are never run.
Only ``config.json``, ``model*.safetensors`` and ``tokenizer.json`` are read.

The network, with the checkpoint's parameter names (``model.`` prefixed in the safetensors):

* ``vision``: a SigLIP-style ViT over 378 px crops of 14 px patches (``patch_emb``, ``pos_emb``,
  ``blocks.N.{ln1,attn.{qkv,proj},ln2,mlp.{fc1,fc2}}``, ``post_ln``), run on a global crop and on
  overlapping local crops whose features are stitched back together, pooled to the global grid
  and concatenated with the global features before ``proj_mlp`` into the text width;
* ``text``: a decoder with parallel attention and MLP on one pre-norm (``blocks.N.{ln,attn.{qkv,
  proj},mlp.{fc1,fc2}}``), rotary positions on the first half of each head, ``post_ln``,
  ``lm_head``, ``wte``; the image prefix (BOS + the image tokens) attends bidirectionally;
* ``region``: Fourier-feature encoders of a coordinate (``coord_features``, ``coord_encoder``) and
  of a size (``size_features``, ``size_encoder``), and MLP decoders of 1024 coordinate bins and of
  two times 1024 log-scale size bins (``coord_decoder``, ``size_decoder``).

``detect``: prefill the image, then the detect template around the object's name; while the
greedy next token is not end-of-text, decode an object as x (a coordinate bin), y, then a size
(width, height bins), feeding each decoded value back through its encoder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.models.common.errors import CacheIntegrityError

MAX_OBJECTS = 50  # Moondream's DEFAULT_MAX_OBJECTS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextConfig(_Section):
    dim: int = 2048
    ff_dim: int = 8192
    n_layers: int = 24
    vocab_size: int = 51200
    max_context: int = 2048
    n_heads: int = 32
    n_kv_heads: int = 32
    prefix_attn: int = 730
    group_size: int | None = None


class VisionConfig(_Section):
    enc_dim: int = 1152
    enc_patch_size: int = 14
    enc_n_layers: int = 27
    enc_ff_dim: int = 4304
    enc_n_heads: int = 16
    proj_out_dim: int = 2048
    crop_size: int = 378
    in_channels: int = 3
    max_crops: int = 12
    overlap_margin: int = 4
    proj_inner_dim: int = 8192


class RegionConfig(_Section):
    dim: int = 2048
    coord_feat_dim: int = 256
    coord_out_dim: int = 1024
    size_feat_dim: int = 512
    size_out_dim: int = 2048
    inner_dim: int = 8192
    group_size: int | None = None


def _templates() -> dict[str, dict[str, list[int]] | None]:
    return {
        "caption": {"short": [1, 32708, 2, 12492, 3], "normal": [1, 32708, 2, 6382, 3], "long": [1, 32708, 2, 4059, 3]},
        "query": {"prefix": [1, 15381, 2], "suffix": [3]},
        "detect": {"prefix": [1, 7235, 476, 2], "suffix": [3]},
        "point": {"prefix": [1, 2581, 2], "suffix": [3]},
    }


class TokenizerConfig(_Section):
    bos_id: int = 0
    eos_id: int = 0
    answer_id: int = 3
    thinking_id: int = 4
    coord_id: int = 5
    size_id: int = 6
    start_ground_points_id: int = 7
    end_ground_id: int = 9
    templates: dict[str, dict[str, list[int]] | None] = Field(default_factory=_templates)


class MoondreamConfig(_Section):
    """The ``config`` object of the checkpoint's ``config.json`` (empty there: the revision's defaults)."""

    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    region: RegionConfig = RegionConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()

    @property
    def grid(self) -> int:
        """Patches per side of one crop (27 at 378 px / 14 px)."""
        return self.vision.crop_size // self.vision.enc_patch_size

    @property
    def prefix_len(self) -> int:
        """BOS plus the image tokens: the prefix that attends bidirectionally (730)."""
        return 1 + self.grid**2


def read_config(directory: Path) -> MoondreamConfig:
    """The network's configuration from ``config.json`` (``{"config": {...}}``, as the checkpoint has it)."""
    path = directory / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheIntegrityError(f"{path} is not readable JSON: {exc}") from exc
    body = raw.get("config", {}) if isinstance(raw, dict) else None
    if not isinstance(body, dict):
        raise CacheIntegrityError(f"{path}: 'config' must be an object of the text/vision/region/tokenizer settings")
    try:
        config = MoondreamConfig.model_validate(body)
    except ValidationError as exc:
        raise CacheIntegrityError(f"{path} is not a Moondream2 (2025-06-21) configuration: {exc}") from exc
    if config.text.group_size is not None or config.region.group_size is not None:
        raise CacheIntegrityError(f"{path}: quantised Moondream weights (group_size) are not supported")
    if config.text.dim % config.text.n_heads or config.text.n_heads % config.text.n_kv_heads:
        raise CacheIntegrityError(f"{path}: text dim/n_heads/n_kv_heads do not divide")
    return config


# -- the pure maths: crops, bins -----------------------------------------------------------------


def select_tiling(height: int, width: int, crop_size: int, max_crops: int) -> tuple[int, int]:
    """(rows, columns) of local crops covering a ``height`` x ``width`` picture (margins taken off)."""
    if height <= crop_size or width <= crop_size:
        return (1, 1)
    min_h = math.ceil(height / crop_size)
    min_w = math.ceil(width / crop_size)
    if min_h * min_w > max_crops:
        ratio = math.sqrt(max_crops / (min_h * min_w))
        return (max(1, math.floor(min_h * ratio)), max(1, math.floor(min_w * ratio)))
    h_tiles = max(math.floor(math.sqrt(max_crops * height / width)), min_h)
    w_tiles = max(math.floor(math.sqrt(max_crops * width / height)), min_w)
    if h_tiles * w_tiles > max_crops:
        if w_tiles > h_tiles:
            w_tiles = math.floor(max_crops / h_tiles)
        else:
            h_tiles = math.floor(max_crops / w_tiles)
    return (max(1, h_tiles), max(1, w_tiles))


def overlap_crops(image: np.ndarray, vision: VisionConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """(crops (1 + rows*cols, S, S, 3) uint8, (rows, cols)): the picture squashed to one global crop,
    then resized so that ``rows x cols`` windows plus a margin of ``overlap_margin`` patches on each
    side tile it exactly, cut into overlapping S px crops (zero-padded at the far edges)."""
    from PIL import Image

    size, patch, margin = vision.crop_size, vision.enc_patch_size, vision.overlap_margin
    margin_px = patch * margin
    window = (size // patch - 2 * margin) * patch
    height, width = image.shape[:2]
    rows, cols = select_tiling(height - 2 * margin_px, width - 2 * margin_px, window, vision.max_crops)
    crops = np.zeros((rows * cols + 1, size, size, image.shape[2]), dtype=np.uint8)
    picture = Image.fromarray(image)
    crops[0] = np.asarray(picture.resize((size, size), Image.Resampling.LANCZOS))
    target_h, target_w = rows * window + 2 * margin_px, cols * window + 2 * margin_px
    resized = np.asarray(picture.resize((target_w, target_h), Image.Resampling.LANCZOS))
    for i in range(rows):
        for j in range(cols):
            part = resized[i * window : i * window + size, j * window : j * window + size]
            crops[1 + i * cols + j, : part.shape[0], : part.shape[1]] = part
    return crops, (rows, cols)


def stitch_crops(features: Any, tiling: tuple[int, int], margin: int) -> Any:
    """Local crops' feature grids (n, g, g, C) back into one grid: each crop keeps its inner part,
    plus its outer margins on the picture's border (``margin`` in grid cells)."""
    import torch

    rows, cols = tiling
    g = features.shape[1]
    inner = g - 2 * margin
    out = torch.zeros(
        (inner * rows + 2 * margin, inner * cols + 2 * margin, features.shape[3]),
        dtype=features.dtype,
        device=features.device,
    )
    for index in range(features.shape[0]):
        r, c = divmod(index, cols)
        y0 = 0 if r == 0 else margin
        y1 = g if r == rows - 1 else g - margin
        x0 = 0 if c == 0 else margin
        x1 = g if c == cols - 1 else g - margin
        out[r * inner + y0 : r * inner + y1, c * inner + x0 : c * inner + x1] = features[index, y0:y1, x0:x1]
    return out


def size_from_bin(index: int, bins: int = 1024) -> float:
    """A box side as a fraction of the picture from its size bin: log scale, 2^-10 (bin 0) to 1 (last bin)."""
    return float(2.0 ** ((index / (bins - 1)) * 10.0 - 10.0))


def coordinate_from_bin(index: int, bins: int) -> float:
    """A box centre coordinate as a fraction of the picture from its bin (``bin / bins``)."""
    return index / bins


def box_of(x: float, y: float, w: float, h: float) -> dict[str, float]:
    """Moondream's object: the normalised corners around a centre."""
    return {"x_min": x - w / 2, "y_min": y - h / 2, "x_max": x + w / 2, "y_max": y + h / 2}


# -- the network -------------------------------------------------------------------------------


def build_network(config: MoondreamConfig, dtype: Any) -> Any:
    """The modules, named as the checkpoint's parameters (without their ``model.`` prefix)."""
    import torch
    from torch import nn

    t, v, r = config.text, config.vision, config.region

    def lin(a: int, b: int) -> Any:
        return nn.Linear(a, b, dtype=dtype)

    def mlp(a: int, inner: int, b: int) -> Any:
        return nn.ModuleDict({"fc1": lin(a, inner), "fc2": lin(inner, b)})

    vision = nn.ModuleDict(
        {
            "patch_emb": lin(v.enc_patch_size**2 * v.in_channels, v.enc_dim),
            "blocks": nn.ModuleList(
                nn.ModuleDict(
                    {
                        "ln1": nn.LayerNorm(v.enc_dim, dtype=dtype),
                        "attn": nn.ModuleDict(
                            {"qkv": lin(v.enc_dim, 3 * v.enc_dim), "proj": lin(v.enc_dim, v.enc_dim)}
                        ),
                        "ln2": nn.LayerNorm(v.enc_dim, dtype=dtype),
                        "mlp": mlp(v.enc_dim, v.enc_ff_dim, v.enc_dim),
                    }
                )
                for _ in range(v.enc_n_layers)
            ),
            "post_ln": nn.LayerNorm(v.enc_dim, dtype=dtype),
            "proj_mlp": mlp(2 * v.enc_dim, v.proj_inner_dim, v.proj_out_dim),
        }
    )
    vision.pos_emb = nn.Parameter(torch.zeros(1, config.grid**2, v.enc_dim, dtype=dtype))
    head_dim = t.dim // t.n_heads
    qkv_dim = t.dim + 2 * t.n_kv_heads * head_dim
    text = nn.ModuleDict(
        {
            "blocks": nn.ModuleList(
                nn.ModuleDict(
                    {
                        "ln": nn.LayerNorm(t.dim, dtype=dtype),
                        "attn": nn.ModuleDict({"qkv": lin(t.dim, qkv_dim), "proj": lin(t.dim, t.dim)}),
                        "mlp": mlp(t.dim, t.ff_dim, t.dim),
                    }
                )
                for _ in range(t.n_layers)
            ),
            "post_ln": nn.LayerNorm(t.dim, dtype=dtype),
            "lm_head": lin(t.dim, t.vocab_size),
        }
    )
    text.wte = nn.Parameter(torch.zeros(t.vocab_size, t.dim, dtype=dtype))
    region = nn.ModuleDict(
        {
            "coord_encoder": lin(r.coord_feat_dim, r.dim),
            "coord_decoder": mlp(r.dim, r.inner_dim, r.coord_out_dim),
            "size_encoder": lin(r.size_feat_dim, r.dim),
            "size_decoder": mlp(r.dim, r.inner_dim, r.size_out_dim),
        }
    )
    region.coord_features = nn.Parameter(torch.zeros(1, r.coord_feat_dim // 2, dtype=dtype))
    region.size_features = nn.Parameter(torch.zeros(2, r.size_feat_dim // 2, dtype=dtype))
    return nn.ModuleDict({"vision": vision, "text": text, "region": region})


_RUNTIME_BUFFERS = (".kv_cache.k_cache", ".kv_cache.v_cache", "attn_mask", "freqs_cis")


def load_weights(network: Any, files: list[Path]) -> None:
    """The checkpoint's tensors into ``network`` (``model.`` prefix dropped); every parameter must be
    there with its shape, and nothing else."""
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for path in files:
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CacheIntegrityError(f"{path} is not a readable safetensors file: {exc}") from exc
        for name, tensor in tensors.items():
            if name.endswith(_RUNTIME_BUFFERS):
                continue  # caches and tables the runtime rebuilds, should a checkpoint hold them
            state[name.removeprefix("model.")] = tensor
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            k = wrong[0]
            details.append(f"{k} is {tuple(state[k].shape)}, the configuration makes it {tuple(expected[k].shape)}")
        raise CacheIntegrityError(
            f"{files[0].parent}: the weights do not fit a Moondream2 network of its config.json: {'; '.join(details)}"
        )
    network.load_state_dict(state, strict=True)


def _linear(x: Any, module: Any) -> Any:
    import torch.nn.functional as F

    return F.linear(x, module.weight, module.bias)


def _mlp(x: Any, module: Any) -> Any:
    import torch.nn.functional as F

    return _linear(F.gelu(_linear(x, module.fc1), approximate="tanh"), module.fc2)


def _layer_norm(x: Any, module: Any) -> Any:
    import torch.nn.functional as F

    return F.layer_norm(x, module.weight.shape, module.weight, module.bias)


def rotary_tables(head_dim: int, max_context: int, theta: float = 10000.0) -> tuple[Any, Any]:
    """cos, sin (max_context, head_dim / 4): rotary angles of the first half of each head."""
    import torch

    rot = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, rot, 2, dtype=torch.float32)[: rot // 2] / rot))
    angles = torch.arange(max_context, dtype=torch.float32)[:, None] * freqs[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: Any, cos: Any, sin: Any) -> Any:
    """Rotate the first half of each head (B, H, T, D) as pairs (i, i + D/4), written back interleaved
    (a permutation applied alike to queries and keys, so their dot products are those of RoPE)."""
    import torch

    rot = x.shape[-1] // 2
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    real, imag = x_rot[..., : rot // 2], x_rot[..., rot // 2 :]
    out = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)
    return torch.cat([out.to(x.dtype), x_pass], dim=-1)


class MoondreamRunner:
    """One loaded network with its KV cache: ``detect(picture RGB uint8, name)`` -> normalised boxes.

    ``before_layer`` is called before every transformer layer (cancellation and pacing of the agent)."""

    def __init__(
        self, network: Any, config: MoondreamConfig, tokenizer: Any, before_layer: Callable[[], None] | None = None
    ) -> None:
        import torch

        self.torch = torch
        self.network = network.eval()
        self.config = config
        self.tokenizer = tokenizer
        self.before_layer = before_layer or (lambda: None)
        t = config.text
        self.head_dim = t.dim // t.n_heads
        self.dtype = network.text.wte.dtype
        self.device = network.text.wte.device
        cos, sin = rotary_tables(self.head_dim, t.max_context)
        self.cos, self.sin = cos.to(self.device), sin.to(self.device)
        mask = torch.tril(torch.ones(t.max_context, t.max_context, dtype=torch.bool))
        mask[: config.prefix_len, : config.prefix_len] = True
        self.mask = mask.to(self.device)
        shape = (1, t.n_kv_heads, t.max_context, self.head_dim)
        self.cache = [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in range(t.n_layers)
        ]

    # -- vision ------------------------------------------------------------------------------

    def _vision_tower(self, crops: Any) -> Any:
        import torch.nn.functional as F

        v = self.config.vision
        w = self.network.vision
        b, c, h, wd = crops.shape
        p = v.enc_patch_size
        x = (
            crops.reshape(b, c, h // p, p, wd // p, p)
            .permute(0, 2, 4, 1, 3, 5)
            .reshape(b, (h // p) * (wd // p), c * p * p)
        )
        x = _linear(x, w.patch_emb) + w.pos_emb
        heads = v.enc_n_heads
        for block in w.blocks:
            self.before_layer()
            y = _layer_norm(x, block.ln1)
            q, k, val = (
                t.view(b, -1, heads, v.enc_dim // heads).transpose(1, 2)
                for t in _linear(y, block.attn.qkv).chunk(3, dim=-1)
            )
            att = F.scaled_dot_product_attention(q, k, val).transpose(1, 2).reshape(b, -1, v.enc_dim)
            x = x + _linear(att, block.attn.proj)
            x = x + _mlp(_layer_norm(x, block.ln2), block.mlp)
        return _layer_norm(x, w.post_ln)

    def image_embeddings(self, picture: np.ndarray) -> Any:
        """(grid², text dim) embeddings of an RGB picture."""
        import torch.nn.functional as F

        torch, config = self.torch, self.config
        crops, tiling = overlap_crops(picture, config.vision)
        pixels = (
            torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).to(torch.float32).div(255.0).sub(0.5).div(0.5)
        )
        features = self._vision_tower(pixels.to(self.dtype))
        g = config.grid
        local = features[1:].view(-1, g, g, config.vision.enc_dim)
        stitched = stitch_crops(local, tiling, config.vision.overlap_margin)
        pooled = F.adaptive_avg_pool2d(stitched.permute(2, 0, 1), (g, g)).permute(1, 2, 0).reshape(g * g, -1)
        return _mlp(torch.cat([features[0], pooled], dim=-1), self.network.vision.proj_mlp)

    # -- text --------------------------------------------------------------------------------

    def _decode(self, x: Any, pos: int) -> Any:
        """Hidden states (1, T, dim) of ``x`` (1, T, dim) at positions pos.., through the KV cache."""
        import torch.nn.functional as F

        t = self.config.text
        n = x.shape[1]
        end = pos + n
        if end > t.max_context:
            raise ValueError(f"the sequence needs {end} positions; the model has {t.max_context}")
        cos, sin = self.cos[pos:end].to(self.dtype), self.sin[pos:end].to(self.dtype)
        mask = self.mask[pos:end, :end]
        q_dim, kv_dim = t.n_heads * self.head_dim, t.n_kv_heads * self.head_dim
        for block, (k_cache, v_cache) in zip(self.network.text.blocks, self.cache, strict=True):
            self.before_layer()
            y = _layer_norm(x, block.ln)
            q, k, v = _linear(y, block.attn.qkv).split([q_dim, kv_dim, kv_dim], dim=-1)
            q = apply_rotary(q.view(1, n, t.n_heads, self.head_dim).transpose(1, 2), cos, sin)
            k = apply_rotary(k.view(1, n, t.n_kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            k_cache[:, :, pos:end] = k
            v_cache[:, :, pos:end] = v.view(1, n, t.n_kv_heads, self.head_dim).transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q,
                k_cache[:, :, :end],
                v_cache[:, :, :end],
                attn_mask=mask,
                enable_gqa=t.n_heads != t.n_kv_heads,
            )
            x = x + _linear(att.transpose(1, 2).reshape(1, n, t.dim), block.attn.proj) + _mlp(y, block.mlp)
        return x

    def _logits(self, hidden: Any) -> Any:
        return _linear(_layer_norm(hidden[:, -1, :], self.network.text.post_ln), self.network.text.lm_head)

    def _embed_tokens(self, ids: list[int]) -> Any:
        torch = self.torch
        return torch.nn.functional.embedding(torch.tensor([ids], device=self.device), self.network.text.wte)

    # -- region ------------------------------------------------------------------------------

    def _fourier(self, value: Any, features: Any) -> Any:
        f = 2 * math.pi * value @ features
        return self.torch.cat([f.cos(), f.sin()], dim=-1)

    def _encode_coordinate(self, value: float) -> Any:
        region = self.network.region
        coord = self.torch.tensor([[value]], dtype=self.dtype, device=self.device)
        return _linear(self._fourier(coord, region.coord_features), region.coord_encoder).view(1, 1, -1)

    def _encode_size(self, w: float, h: float) -> Any:
        region = self.network.region
        size = self.torch.tensor([w, h], dtype=self.dtype, device=self.device)
        return _linear(self._fourier(size, region.size_features), region.size_encoder).view(1, 1, -1)

    def _coordinate(self, hidden: Any) -> float:
        logits = _mlp(hidden, self.network.region.coord_decoder).reshape(-1)
        return coordinate_from_bin(int(self.torch.argmax(logits)), logits.shape[0])

    def _size(self, hidden: Any) -> tuple[float, float]:
        logits = _mlp(hidden, self.network.region.size_decoder).reshape(2, -1)
        bins = logits.shape[1]
        return size_from_bin(int(self.torch.argmax(logits[0])), bins), size_from_bin(
            int(self.torch.argmax(logits[1])), bins
        )

    # -- detect ------------------------------------------------------------------------------

    def prompt_tokens(self, name: str) -> list[int]:
        """The detect template around the object's name (encoded with a leading space)."""
        template = self.config.tokenizer.templates.get("detect")
        if template is None:
            raise ValueError("this Moondream checkpoint has no detect template")
        return [*template["prefix"], *self.tokenizer.encode(" " + name).ids, *template["suffix"]]

    def detect(self, picture: np.ndarray, name: str, max_objects: int = MAX_OBJECTS) -> list[dict[str, float]]:
        """Normalised boxes (``x_min``, ``y_min``, ``x_max``, ``y_max``) of ``name`` in an RGB picture."""
        torch, config = self.torch, self.config
        with torch.inference_mode():
            image = self.image_embeddings(picture)
            prefix = torch.cat([self._embed_tokens([config.tokenizer.bos_id]), image[None]], dim=1)
            self._decode(prefix, 0)
            pos = prefix.shape[1]
            prompt = self._embed_tokens(self.prompt_tokens(name))
            hidden = self._decode(prompt, pos)
            pos += prompt.shape[1]
            next_token = int(torch.argmax(self._logits(hidden)))
            hidden = hidden[:, -1:, :]
            objects: list[dict[str, float]] = []
            eos = config.tokenizer.eos_id
            while next_token != eos and len(objects) < max_objects and pos + 3 <= config.text.max_context:
                x = self._coordinate(hidden)
                hidden = self._decode(self._encode_coordinate(x), pos)
                y = self._coordinate(hidden)
                hidden = self._decode(self._encode_coordinate(y), pos + 1)
                w, h = self._size(hidden)
                objects.append(box_of(x, y, w, h))
                hidden = self._decode(self._encode_size(w, h), pos + 2)
                pos += 3
                next_token = int(torch.argmax(self._logits(hidden)))
        return objects
