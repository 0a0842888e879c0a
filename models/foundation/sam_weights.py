"""Roboflow's SAM and SAM2 checkpoints (Meta's ``segment_anything`` / ``sam2`` state dicts) read into
transformers' ``SamModel`` / ``Sam2Model``.

Roboflow ships the original checkpoints: ``encoder.pth`` (legacy SAM) or ``model.pth`` (current SAM)
and ``weights.pt`` / ``model.pt`` (SAM2, a ``{"model": state_dict}`` with the video parts too).
Their tensors are the same as transformers' under other names, so each key is renamed (pure
functions below) and the few reshaped ones are rebuilt (SAM2's four point embeddings are one
table). The video-only parts of SAM2 (memory attention and encoder, object pointers) are dropped.

The architecture is read from the tensors' shapes (depth, widths, stages), so any size loads; what
leaves no trace in the weights (attention heads, which blocks attend globally, window sizes) comes
from the variant's published configuration (``SAM2_VARIANTS``, ``SAM_VARIANTS``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.models.common.errors import ModelArtifactsError

# -- SAM2 -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HieraSpec:
    """What a SAM2 image encoder's weights do not say (Meta's sam2_hiera_*.yaml)."""

    heads: int
    global_blocks: tuple[int, ...]
    windows: tuple[int, int, int, int]


SAM2_VARIANTS: dict[str, HieraSpec] = {
    "t": HieraSpec(1, (5, 7, 9), (8, 4, 14, 7)),
    "s": HieraSpec(1, (7, 10, 13), (8, 4, 14, 7)),
    "b+": HieraSpec(2, (12, 16, 20), (8, 4, 14, 7)),
    "l": HieraSpec(2, (23, 33, 43), (8, 4, 16, 8)),
}
# Roboflow's variant names (legacy ids and sam_configuration.json "version") -> the yaml's letter
SAM2_VERSION_NAMES = {
    "hiera_tiny": "t",
    "hiera_small": "s",
    "hiera_b_plus": "b+",
    "hiera_base_plus": "b+",
    "hiera_large": "l",
}
for _letter in ("t", "s", "b+", "l"):
    SAM2_VERSION_NAMES[f"sam2_hiera_{_letter}"] = _letter
    SAM2_VERSION_NAMES[f"sam2.1_hiera_{_letter}"] = _letter

# Video-only parts of a SAM2 checkpoint: an image predictor has no use for them.
_SAM2_VIDEO = re.compile(
    r"^(memory_attention\.|memory_encoder\.|maskmem_tpos_enc|no_mem_pos_enc|no_obj_ptr|obj_ptr_proj\.|"
    r"obj_ptr_tpos_proj\.|mask_downsample\.|no_obj_embed_spatial)"
)

# (pattern, replacement) applied in order to every key that survives the filter above
_SAM2_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"^(vision_encoder\.backbone\.blocks\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),
    (r"\.mlp\.layers\.1\.", ".mlp.proj_out."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"(\.transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"\.transformer\.norm_final_attn\.", ".transformer.layer_norm_final_attn."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    # three-layer heads: first and last layers have names of their own in transformers
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.0\.", r".\1.proj_in."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.1\.", r".\1.layers.0."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)\.layers\.2\.", r".\1.proj_out."),
)


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def sam2_state_to_hf(state: Mapping[str, Any], where: Path | str = "SAM2 checkpoint") -> dict[str, Any]:
    """An original SAM2 state dict (keys ``image_encoder.trunk...``) as ``Sam2Model``'s."""
    import torch

    out: dict[str, Any] = {}
    points: dict[int, Any] = {}
    for key, value in state.items():
        if _SAM2_VIDEO.match(key):
            continue
        point = re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight", key)
        if point:
            points[int(point.group(1))] = value
            continue
        out[_rename(key, _SAM2_RENAMES)] = value
    if sorted(points) != list(range(len(points))) or not points:
        raise ModelArtifactsError(where, "has no sam_prompt_encoder.point_embeddings.<n>.weight tensors (not SAM2)")
    out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)], dim=0)
    gaussian = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if gaussian is None:
        raise ModelArtifactsError(where, "has no sam_prompt_encoder.pe_layer tensor (not SAM2)")
    out["shared_image_embedding.positional_embedding"] = gaussian
    return out


def _shape(state: Mapping[str, Any], key: str, where: Path | str) -> tuple[int, ...]:
    if key not in state:
        raise ModelArtifactsError(where, f"has no {key} (not a SAM2/SAM checkpoint of a known layout)")
    return tuple(int(d) for d in state[key].shape)


def sam2_config(state: Mapping[str, Any], spec: HieraSpec, where: Path | str = "SAM2 checkpoint") -> Any:
    """A ``Sam2Config`` matching an original SAM2 state dict's shapes (+ ``spec`` for the rest)."""
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    trunk = "image_encoder.trunk."
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(trunk)}blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ModelArtifactsError(where, "has no consecutive image_encoder.trunk.blocks.<n> (not SAM2)")
    stage_sizes: list[int] = []
    dims: list[int] = []
    for b in blocks:
        dim_out = _shape(state, f"{trunk}blocks.{b}.attn.proj.weight", where)[0]
        if not dims or dim_out != dims[-1]:
            dims.append(dim_out)
            stage_sizes.append(0)
        stage_sizes[-1] += 1
    if len(dims) != 4:
        raise ModelArtifactsError(where, f"has {len(dims)} encoder stages; SAM2's Hiera has 4")
    embed = _shape(state, f"{trunk}patch_embed.proj.weight", where)
    background = _shape(state, f"{trunk}pos_embed", where)[2:]
    window0 = _shape(state, f"{trunk}pos_embed_window", where)[2]
    mlp = _shape(state, f"{trunk}blocks.0.mlp.layers.0.weight", where)[0]
    windows = (window0, *spec.windows[1:])
    backbone = Sam2HieraDetConfig(
        hidden_size=embed[0],
        num_attention_heads=spec.heads,
        blocks_per_stage=stage_sizes,
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[spec.heads * 2**s for s in range(4)],
        global_attention_blocks=[g for g in spec.global_blocks if g < len(blocks)],
        window_size_per_stage=list(windows),
        window_positional_embedding_background_size=list(background),
        patch_kernel_size=list(embed[2:]),
        mlp_ratio=mlp / dims[0],
    )
    fpn = _shape(state, "image_encoder.neck.convs.0.conv.weight", where)[0]
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1], fpn_hidden_size=fpn)
    prompt_hidden = _shape(state, "sam_prompt_encoder.no_mask_embed.weight", where)[1]
    mask_channels = _shape(state, "sam_prompt_encoder.mask_downscaling.3.weight", where)[0]
    decoder = "sam_mask_decoder."
    layers = {
        int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(decoder)}transformer\.layers\.(\d+)\.", k))
    }
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=prompt_hidden, mask_input_channels=mask_channels),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=_shape(state, f"{decoder}iou_token.weight", where)[1],
            mlp_dim=_shape(state, f"{decoder}transformer.layers.0.mlp.layers.0.weight", where)[0],
            num_hidden_layers=len(layers),
            iou_head_hidden_dim=_shape(state, f"{decoder}iou_prediction_head.layers.0.weight", where)[0],
        ),
    )


def sam2_spec(version: str) -> HieraSpec:
    """The published settings of a SAM2 variant name (``hiera_large``, ``sam2.1_hiera_l``...)."""
    letter = SAM2_VERSION_NAMES.get(version)
    if letter is None:
        raise ModelArtifactsError(
            "sam_configuration.json",
            f"names SAM2 version {version!r}; known: {', '.join(sorted(SAM2_VERSION_NAMES))}",
        )
    return SAM2_VARIANTS[letter]


# -- SAM (v1) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VitSpec:
    """What a SAM image encoder's weights do not say (segment_anything's build_sam_vit_*)."""

    heads: int
    global_blocks: tuple[int, ...]


SAM_VARIANTS: dict[str, VitSpec] = {
    "vit_b": VitSpec(12, (2, 5, 8, 11)),
    "vit_l": VitSpec(16, (5, 11, 17, 23)),
    "vit_h": VitSpec(16, (7, 15, 23, 31)),
}

_SAM_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"\.blocks\.", ".layers."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.neck\.0\.", ".neck.conv1."),
    (r"\.neck\.1\.", ".neck.layer_norm1."),
    (r"\.neck\.2\.", ".neck.conv2."),
    (r"\.neck\.3\.", ".neck.layer_norm2."),
    (r"\.norm", ".layer_norm"),
    (r"\.point_embeddings\.", ".point_embed."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.0\.", r".\1.proj_in."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.1\.", r".\1.layers.0."),
    (r"\.(output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.2\.", r".\1.proj_out."),
)


def sam_state_to_hf(state: Mapping[str, Any], where: Path | str = "SAM checkpoint") -> dict[str, Any]:
    """An original ``segment_anything`` state dict as ``SamModel``'s (pixel mean/std are constants there)."""
    out = {_rename(k, _SAM_RENAMES): v for k, v in state.items() if k not in ("pixel_mean", "pixel_std")}
    gaussian = out.get("prompt_encoder.shared_embedding.positional_embedding")
    if gaussian is None:
        raise ModelArtifactsError(where, "has no prompt_encoder.pe_layer tensor (not SAM)")
    out["shared_image_embedding.positional_embedding"] = gaussian
    return out


def sam_config(state: Mapping[str, Any], spec: VitSpec, where: Path | str = "SAM checkpoint") -> Any:
    """A ``SamConfig`` matching an original SAM state dict's shapes (+ ``spec`` for the rest)."""
    from transformers import SamConfig, SamMaskDecoderConfig, SamPromptEncoderConfig, SamVisionConfig

    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ModelArtifactsError(where, "has no consecutive image_encoder.blocks.<n> (not SAM)")
    hidden = _shape(state, "image_encoder.patch_embed.proj.weight", where)[0]
    gaussian = _shape(state, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", where)
    head_dim = hidden // spec.heads
    windowed = [b for b in blocks if b not in spec.global_blocks]
    window = 14
    if windowed:
        window = (_shape(state, f"image_encoder.blocks.{windowed[0]}.attn.rel_pos_h", where)[0] + 1) // 2
    layers = {int(m.group(1)) for k in state if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k))}
    decoder_hidden = _shape(state, "mask_decoder.iou_token.weight", where)[1]
    vision = SamVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=len(blocks),
        num_attention_heads=spec.heads,
        global_attn_indexes=[g for g in spec.global_blocks if g < len(blocks)],
        mlp_dim=_shape(state, "image_encoder.blocks.0.mlp.lin1.weight", where)[0],
        output_channels=_shape(state, "image_encoder.neck.0.weight", where)[0],
        window_size=window,
        num_pos_feats=gaussian[1],
    )
    if head_dim * spec.heads != hidden:
        raise ModelArtifactsError(where, f"has width {hidden}, which {spec.heads} attention heads do not divide")
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=_shape(state, "prompt_encoder.no_mask_embed.weight", where)[1],
            mask_input_channels=_shape(state, "prompt_encoder.mask_downscaling.3.weight", where)[0],
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=decoder_hidden,
            mlp_dim=_shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", where)[0],
            num_hidden_layers=len(layers),
            iou_head_hidden_dim=_shape(state, "mask_decoder.iou_prediction_head.layers.0.weight", where)[0],
        ),
    )


def sam_spec(version: str) -> VitSpec:
    spec = SAM_VARIANTS.get(version)
    if spec is None:
        raise ModelArtifactsError("sam", f"version {version!r} is not one of {', '.join(SAM_VARIANTS)}")
    return spec


def read_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A torch checkpoint's state dict (``{"model": ...}`` unwrapped), read without running pickled code.

    ``mmap``: tensors stay in the file's pages until copied into the network (a 3.4 GB checkpoint
    is then not held twice in memory while it loads)."""
    import torch

    if mmap:
        try:
            content = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # an old (non-zip) torch file cannot be mapped: read it whole
            return read_checkpoint(path)
        if isinstance(content, dict) and isinstance(content.get("model"), dict):
            content = content["model"]
        if isinstance(content, dict) and content:
            return content
        raise ModelArtifactsError(path, "holds no state dict")
    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelArtifactsError(path, f"cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        content = content["model"]
    if not isinstance(content, dict) or not content:
        raise ModelArtifactsError(path, "holds no state dict")
    return content


__all__ = [
    "SAM2_VARIANTS",
    "SAM2_VERSION_NAMES",
    "SAM_VARIANTS",
    "HieraSpec",
    "VitSpec",
    "read_checkpoint",
    "sam2_config",
    "sam2_spec",
    "sam2_state_to_hf",
    "sam_config",
    "sam_spec",
    "sam_state_to_hf",
]
