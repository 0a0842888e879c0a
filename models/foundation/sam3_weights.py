"""Roboflow's SAM3 checkpoint (Meta's original ``sam3`` state dict) read into transformers' ``Sam3Model``.

Roboflow's ``weights.pt`` is what Meta's ``build_sam3_image_model`` loads: the image detector's
tensors under ``detector.`` (beside the video tracker's under ``tracker.``, which an image model
does not use), possibly wrapped as ``{"model": ...}``. The tensors are transformers' under other
names, so each key is renamed (ordered rules below); fused projections are split (the ViT's
``qkv``, ``nn.MultiheadAttention``'s ``in_proj_*``), CLIP's ``text_projection`` is stored
transposed, and the ViT's position table carries a class-token row transformers does not keep.

The architecture is read from the tensors' shapes (depths, widths, queries, vocabulary); what leaves
no trace in the weights follows Meta's SAM3 design: 64-wide heads in the ViT and the text encoder,
32-wide heads in the detector's 256-wide transformers, 24-pixel windows with four evenly spaced
global-attention blocks (7, 15, 23, 31 of 32), 1008-pixel input in 14-pixel patches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.models.common.errors import ModelArtifactsError

IMAGE_SIZE = 1008
VIT_HEAD_DIM = 64
TEXT_HEAD_DIM = 64
DETR_HEAD_DIM = 32
WINDOW_SIZE = 24

# (pattern, replacement), applied in order to every key (after ``detector.`` is taken off)
_RENAMES: tuple[tuple[str, str], ...] = (
    # vision: ViT trunk
    (r"^backbone\.vision_backbone\.trunk\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (
        r"^backbone\.vision_backbone\.trunk\.patch_embed\.proj\.",
        "vision_encoder.backbone.embeddings.patch_embeddings.projection.",
    ),
    (r"^backbone\.vision_backbone\.trunk\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (
        r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.norm(\d)\.",
        r"vision_encoder.backbone.layers.\1.layer_norm\2.",
    ),
    (
        r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.qkv\.",
        r"vision_encoder.backbone.layers.\1.attention.qkv.",
    ),
    (
        r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.proj\.",
        r"vision_encoder.backbone.layers.\1.attention.o_proj.",
    ),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    # vision: FPN neck (scale 4: two transposed convs around a GELU; scale 2: one; 0.5: a max-pool)
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_0\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    # text: OpenCLIP-style encoder -> CLIPTextModelWithProjection, then the 1024 -> 256 resizer
    (
        r"^backbone\.language_backbone\.encoder\.token_embedding\.",
        "text_encoder.text_model.embeddings.token_embedding.",
    ),
    (
        r"^backbone\.language_backbone\.encoder\.positional_embedding$",
        "text_encoder.text_model.embeddings.position_embedding.weight",
    ),
    (r"^backbone\.language_backbone\.encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"^backbone\.language_backbone\.encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (
        r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.attn\.",
        r"text_encoder.text_model.encoder.layers.\1.self_attn.",
    ),
    (
        r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.ln_(\d)\.",
        r"text_encoder.text_model.encoder.layers.\1.layer_norm\2.",
    ),
    (
        r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.",
        r"text_encoder.text_model.encoder.layers.\1.mlp.fc1.",
    ),
    (
        r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.",
        r"text_encoder.text_model.encoder.layers.\1.mlp.fc2.",
    ),
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    # geometry (box prompt) encoder
    (r"^geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (r"^geometry_encoder\.encode\.(\d+)\.linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (r"^geometry_encoder\.encode\.(\d+)\.norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    # DETR encoder
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.", r"detr_encoder.layers.\1."),
    # DETR decoder
    (r"^transformer\.decoder\.presence_token_head\.layers\.(\d)\.", r"detr_decoder.presence_head.layer<\1>."),
    (r"^transformer\.decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"^transformer\.decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.(\d)\.", r"detr_decoder.box_head.layer<\1>."),
    (r"^transformer\.decoder\.instance_bbox_embed\.layers\.(\d)\.", r"detr_decoder.instance_box_head.layer<\1>."),
    (r"^transformer\.decoder\.ref_point_head\.layers\.(\d)\.", r"detr_decoder.ref_point_head.layer<\1>."),
    (r"^transformer\.decoder\.boxRPB_embed_(x|y)\.layers\.(\d)\.", r"detr_decoder.box_rpb_embed_\1.layer<\2>."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"^transformer\.decoder\.", "detr_decoder."),
    # scoring: prompt MLP and the two projections whose dot product is a query's logit
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", r"dot_product_scoring.text_mlp.layer<\1>."),
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    # mask head
    (r"^segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"^segmentation_head\.(?:mask_predictor\.)?mask_embed\.layers\.", "mask_decoder.mask_embedder.layers."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    # every nn.MultiheadAttention's output projection
    (r"\.out_proj\.", ".o_proj."),
)
# The text encoder's attention keeps transformers' CLIP name for its output projection.
_TEXT_OUT = (r"^(text_encoder\.text_model\.encoder\.layers\.\d+\.self_attn)\.o_proj\.", r"\1.out_proj.")


def _rename(key: str) -> str:
    for pattern, replacement in _RENAMES:
        key = re.sub(pattern, replacement, key)
    key = re.sub(*_TEXT_OUT, key)
    # Meta numbers MLP layers from 0, transformers' Sam3DecoderMLP from 1 (layer1, layer2, layer3)
    return re.sub(r"\.layer<(\d)>\.", lambda m: f".layer{int(m.group(1)) + 1}.", key)


def detector_state(state: Mapping[str, Any], where: Path | str = "SAM3 checkpoint") -> dict[str, Any]:
    """The image detector's tensors of a SAM3 checkpoint, with Meta's ``detector.`` prefix taken
    off (a checkpoint of the detector alone has none); the video tracker's are left out."""
    prefixed = {k[len("detector.") :]: v for k, v in state.items() if k.startswith("detector.")}
    out = prefixed or {k: v for k, v in state.items() if not k.startswith("tracker.")}
    if not any(k.startswith("backbone.vision_backbone.trunk.") for k in out):
        raise ModelArtifactsError(where, "has no backbone.vision_backbone.trunk tensors (not a SAM3 checkpoint)")
    return out


def sam3_state_to_hf(state: Mapping[str, Any], where: Path | str = "SAM3 checkpoint") -> dict[str, Any]:
    """Meta's SAM3 detector state dict (see :func:`detector_state`) in ``Sam3Model``'s names."""
    import torch

    out: dict[str, Any] = {}
    for key, value in detector_state(state, where).items():
        if key.endswith(".freqs_cis"):  # rotary tables: transformers computes them
            continue
        name = _rename(key)
        if name == "vision_encoder.backbone.embeddings.position_embeddings":
            value = value[:, 1:]  # the class-token row: the SAM3 ViT has no class token
        elif name == "text_encoder.text_projection.weight":
            value = value.T  # OpenCLIP multiplies x @ P; a Linear holds P transposed
        fused = re.fullmatch(r"(.+)\.(?:qkv\.(weight|bias)|in_proj_(weight|bias))", name)
        if fused:
            stem, kind = fused.group(1), fused.group(2) or fused.group(3)
            for part, chunk in zip(("q", "k", "v"), torch.chunk(value, 3, dim=0), strict=True):
                out[f"{stem}.{part}_proj.{kind}"] = chunk
            continue
        out[name] = value
    return out


def _shape(state: Mapping[str, Any], key: str, where: Path | str) -> tuple[int, ...]:
    value = state.get(key)
    if value is None:
        raise ModelArtifactsError(where, f"lacks {key} (not a SAM3 checkpoint)")
    return tuple(int(n) for n in value.shape)


def _count(state: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def sam3_config(hf_state: Mapping[str, Any], where: Path | str = "SAM3 checkpoint") -> Any:
    """The ``Sam3Config`` of a renamed state dict: sizes from its tensors, the rest SAM3's design."""
    from transformers import Sam3Config

    patch_w = _shape(hf_state, "vision_encoder.backbone.embeddings.patch_embeddings.projection.weight", where)
    width, patch = patch_w[0], patch_w[2]
    positions = _shape(hf_state, "vision_encoder.backbone.embeddings.position_embeddings", where)[1]
    pretrain = round(math.sqrt(positions)) * patch
    depth = _count(hf_state, r"vision_encoder\.backbone\.layers\.(\d+)\.")
    if depth < 1 or width % VIT_HEAD_DIM:
        raise ModelArtifactsError(where, f"has a {depth}-block, {width}-wide ViT SAM3 cannot have")
    vit_mlp = _shape(hf_state, "vision_encoder.backbone.layers.0.mlp.fc1.weight", where)[0]
    globals_ = sorted({depth * (k + 1) // 4 - 1 for k in range(4)} - {-1})
    fpn = _shape(hf_state, "vision_encoder.neck.fpn_layers.0.proj1.weight", where)[0]
    grid = IMAGE_SIZE // patch

    vocab, text_width = _shape(hf_state, "text_encoder.text_model.embeddings.token_embedding.weight", where)
    context = _shape(hf_state, "text_encoder.text_model.embeddings.position_embedding.weight", where)[0]
    text_depth = _count(hf_state, r"text_encoder\.text_model\.encoder\.layers\.(\d+)\.")
    text_mlp = _shape(hf_state, "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", where)[0]
    projection = _shape(hf_state, "text_encoder.text_projection.weight", where)[0]

    hidden = _shape(hf_state, "text_projection.weight", where)[0]
    heads = max(1, hidden // DETR_HEAD_DIM)

    def block(prefix: str) -> dict[str, Any]:
        layers = _count(hf_state, rf"{re.escape(prefix)}\.layers\.(\d+)\.")
        mlp = _shape(hf_state, f"{prefix}.layers.0.mlp.fc1.weight", where)[0] if layers else 2048
        return {"hidden_size": hidden, "num_layers": layers, "num_attention_heads": heads, "intermediate_size": mlp}

    decoder = block("detr_decoder")
    decoder["num_queries"] = _shape(hf_state, "detr_decoder.query_embed.weight", where)[0]
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": width,
                "intermediate_size": vit_mlp,
                "num_hidden_layers": depth,
                "num_attention_heads": width // VIT_HEAD_DIM,
                "image_size": IMAGE_SIZE,
                "patch_size": patch,
                "window_size": WINDOW_SIZE,
                "global_attn_indexes": globals_,
                "pretrain_image_size": pretrain,
            },
            "fpn_hidden_size": fpn,
            "backbone_feature_sizes": [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]],
        },
        text_config={
            "vocab_size": vocab,
            "hidden_size": text_width,
            "intermediate_size": text_mlp,
            "projection_dim": projection,
            "num_hidden_layers": text_depth,
            "num_attention_heads": max(1, text_width // TEXT_HEAD_DIM),
            "max_position_embeddings": context,
            "hidden_act": "gelu",
            # Meta's tokenizer: start/end of text are the last two ids
            "bos_token_id": vocab - 2,
            "eos_token_id": vocab - 1,
            "pad_token_id": 0,
        },
        geometry_encoder_config=block("geometry_encoder"),
        detr_encoder_config=block("detr_encoder"),
        detr_decoder_config=decoder,
        mask_decoder_config={"hidden_size": hidden, "num_attention_heads": heads},
    )


def build_sam3(state: Mapping[str, Any], where: Path | str = "SAM3 checkpoint") -> Any:
    """A ``Sam3Model`` holding a Meta SAM3 checkpoint's weights (float32, eval mode).

    Every tensor transformers' model has must come from the checkpoint; tensors of parts it does not
    implement (point and mask prompts, instance queries of the interactive mode) are left out."""
    from transformers import Sam3Model

    hf_state = sam3_state_to_hf(state, where)
    model = Sam3Model(sam3_config(hf_state, where))
    try:
        missing, _unused = model.load_state_dict(hf_state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise ModelArtifactsError(where, f"does not fit SAM3 ({str(exc)[:400]})") from None
    if missing:
        raise ModelArtifactsError(where, f"lacks {len(missing)} SAM3 tensors (first: {', '.join(sorted(missing)[:3])})")
    import torch

    return model.eval().to(torch.float32)


__all__ = ["IMAGE_SIZE", "build_sam3", "detector_state", "sam3_config", "sam3_state_to_hf"]
