"""Grounding DINO checkpoints in the original (IDEA-Research ``groundingdino``) key names, read into
transformers' ``GroundingDinoForObjectDetection``.

Roboflow's legacy stack keeps ``groundingdino_swint_ogc.pth`` (``{"model": state_dict}``) and its
current stack ``weights.pth`` + ``config.py`` (the ``groundingdino`` package's Python config). Both
are the original module tree: ``backbone.0.*`` (Swin), ``bert.*``, ``feat_map``, ``input_proj``,
``transformer.{encoder,decoder}.*``, ``bbox_embed``. The renaming to transformers' names follows the
layout of transformers' own conversion script (``convert_grounding_dino_to_hf.py``), written for the
names of the installed transformers 5 (fused ``qkv`` / ``in_proj`` matrices are split into query,
key and value). The architecture is read from the tensors' shapes, so any size of the original
network loads; only the attention head counts are not visible in shapes: they come from
``config.py`` (``nheads``) or the original Swin-T OGC config (8).

``config.py`` is Python; it is parsed with :mod:`ast` and only literal assignments are read, never run.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_agent.models.common.errors import ModelArtifactsError

logger = logging.getLogger(__name__)

LEGACY_FILE = "groundingdino_swint_ogc.pth"
#: the config Roboflow's legacy class downloads next to the checkpoint
LEGACY_CONFIG = "GroundingDINO_SwinT_OGC.py"
PACKAGE_FILES = ("weights.pth", "config.py")
#: GroundingDINO_SwinT_OGC.py's values that shapes do not show
DEFAULT_HEADS = 8
DEFAULT_MAX_TEXT_LEN = 256
DEFAULT_TEXT_ENCODER = "bert-base-uncased"

_SWIN = "model.backbone.conv_encoder.model."
_ENC = "model.encoder.layers."
_DEC = "model.decoder.layers."

# (original key pattern, transformers key) in order; the first match wins. ``\N`` groups carry
# layer numbers over.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"backbone\.0\.patch_embed\.proj\.(.+)", _SWIN + r"swin.embeddings.patch_embeddings.projection.\1"),
    (r"backbone\.0\.patch_embed\.norm\.(.+)", _SWIN + r"swin.embeddings.norm.\1"),
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm1\.(.+)",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_before.\3",
    ),
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.norm2\.(.+)",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.layernorm_after.\3",
    ),
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias.relative_position_bias_table",
    ),
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(.+)",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.o_proj.\3",
    ),
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc[12])\.(.+)",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.mlp.\3.\4",
    ),
    (r"backbone\.0\.layers\.(\d+)\.downsample\.(.+)", _SWIN + r"swin.encoder.layers.\1.downsample.\2"),
    (r"bert\.(.+)", r"model.text_backbone.\1"),
    (r"feat_map\.(.+)", r"model.text_projection.\1"),
    (r"input_proj\.(.+)", r"model.input_proj_vision.\1"),
    # encoder: deformable image layers, text enhancer layers, fusion layers -> one layer each
    (r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)", _ENC + r"\1.deformable_layer.self_attn.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm1\.(.+)", _ENC + r"\1.deformable_layer.self_attn_layer_norm.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.linear1\.(.+)", _ENC + r"\1.deformable_layer.fc1.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.linear2\.(.+)", _ENC + r"\1.deformable_layer.fc2.\2"),
    (r"transformer\.encoder\.layers\.(\d+)\.norm2\.(.+)", _ENC + r"\1.deformable_layer.final_layer_norm.\2"),
    (
        r"transformer\.encoder\.text_layers\.(\d+)\.self_attn\.out_proj\.(.+)",
        _ENC + r"\1.text_enhancer_layer.self_attn.out_proj.\2",
    ),
    (r"transformer\.encoder\.text_layers\.(\d+)\.linear1\.(.+)", _ENC + r"\1.text_enhancer_layer.fc1.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.linear2\.(.+)", _ENC + r"\1.text_enhancer_layer.fc2.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.norm1\.(.+)", _ENC + r"\1.text_enhancer_layer.layer_norm_before.\2"),
    (r"transformer\.encoder\.text_layers\.(\d+)\.norm2\.(.+)", _ENC + r"\1.text_enhancer_layer.layer_norm_after.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.gamma_v", _ENC + r"\1.fusion_layer.vision_param"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.gamma_l", _ENC + r"\1.fusion_layer.text_param"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_v\.(.+)", _ENC + r"\1.fusion_layer.layer_norm_vision.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.layer_norm_l\.(.+)", _ENC + r"\1.fusion_layer.layer_norm_text.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.v_proj\.(.+)", _ENC + r"\1.fusion_layer.attn.vision_proj.\2"),
    (r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.l_proj\.(.+)", _ENC + r"\1.fusion_layer.attn.text_proj.\2"),
    (
        r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_v_proj\.(.+)",
        _ENC + r"\1.fusion_layer.attn.values_vision_proj.\2",
    ),
    (
        r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.values_l_proj\.(.+)",
        _ENC + r"\1.fusion_layer.attn.values_text_proj.\2",
    ),
    (
        r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_v_proj\.(.+)",
        _ENC + r"\1.fusion_layer.attn.out_vision_proj.\2",
    ),
    (
        r"transformer\.encoder\.fusion_layers\.(\d+)\.attn\.out_l_proj\.(.+)",
        _ENC + r"\1.fusion_layer.attn.out_text_proj.\2",
    ),
    # decoder
    (r"transformer\.decoder\.layers\.(\d+)\.cross_attn\.(.+)", _DEC + r"\1.encoder_attn.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.(.+)", _DEC + r"\1.encoder_attn_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.(.+)", _DEC + r"\1.encoder_attn_text.out_proj.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.catext_norm\.(.+)", _DEC + r"\1.encoder_attn_text_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.(.+)", _DEC + r"\1.self_attn.out_proj.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.(.+)", _DEC + r"\1.self_attn_layer_norm.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.linear1\.(.+)", _DEC + r"\1.fc1.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.linear2\.(.+)", _DEC + r"\1.fc2.\2"),
    (r"transformer\.decoder\.layers\.(\d+)\.norm3\.(.+)", _DEC + r"\1.final_layer_norm.\2"),
    (r"transformer\.decoder\.norm\.(.+)", r"model.decoder.layer_norm.\1"),
    (r"transformer\.decoder\.ref_point_head\.(.+)", r"model.decoder.reference_points_head.\1"),
    (r"transformer\.decoder\.bbox_embed\.(.+)", r"model.decoder.bbox_embed.\1"),
    (r"transformer\.enc_output\.(.+)", r"model.enc_output.\1"),
    (r"transformer\.enc_output_norm\.(.+)", r"model.enc_output_norm.\1"),
    (r"transformer\.enc_out_bbox_embed\.(.+)", r"model.encoder_output_bbox_embed.\1"),
    (r"transformer\.level_embed", r"model.level_embed"),
    (r"transformer\.tgt_embed\.weight", r"model.query_position_embeddings.weight"),
    (r"(bbox_embed\.\d+\..+)", r"\1"),
)

# fused projections, split into three equal row blocks (query, key, value in that order)
_SPLITS: tuple[tuple[str, str, tuple[str, str, str]], ...] = (
    (
        r"backbone\.0\.layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)",
        _SWIN + r"swin.encoder.layers.\1.blocks.\2.attention.{}.\3",
        ("q_proj", "k_proj", "v_proj"),
    ),
    (
        r"transformer\.encoder\.text_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)",
        _ENC + r"\1.text_enhancer_layer.self_attn.{}.\2",
        ("query", "key", "value"),
    ),
    (
        r"transformer\.decoder\.layers\.(\d+)\.ca_text\.in_proj_(weight|bias)",
        _DEC + r"\1.encoder_attn_text.{}.\2",
        ("query", "key", "value"),
    ),
    (
        r"transformer\.decoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)",
        _DEC + r"\1.self_attn.{}.\2",
        ("query", "key", "value"),
    ),
)

# tensors of the original with no counterpart: buffers transformers recomputes, BERT's unused pooler
_DROPPED = (
    r"backbone\.0\.layers\.\d+\.blocks\.\d+\.attn\.relative_position_index",
    r"bert\.pooler\..+",
    r"bert\.embeddings\.position_ids",
)

#: transformers parameters the original network does not have (never used for detection)
UNUSED_TARGETS = (_SWIN + "swin.layernorm.weight", _SWIN + "swin.layernorm.bias")

_COMPILED_RENAMES = tuple((re.compile(p), r) for p, r in _RENAMES)
_COMPILED_SPLITS = tuple((re.compile(p), r, parts) for p, r, parts in _SPLITS)
_STAGE_NORM = re.compile(r"backbone\.0\.norm(\d+)\.(weight|bias)")
_COMPILED_DROPPED = tuple(re.compile(p) for p in _DROPPED)


def to_transformers(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(renamed state dict, original keys nothing matched)."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        key = key.removeprefix("module.")
        if any(p.fullmatch(key) for p in _COMPILED_DROPPED):
            continue
        stage = _STAGE_NORM.fullmatch(key)
        if stage:  # the original's norm<i> after stage i is transformers' stage<i+1> (stem = stage0)
            out[f"{_SWIN}hidden_states_norms.stage{int(stage.group(1)) + 1}.{stage.group(2)}"] = tensor
            continue
        for pattern, target, parts in _COMPILED_SPLITS:
            match = pattern.fullmatch(key)
            if match:
                rows = tensor.shape[0]
                if rows % 3:
                    unknown.append(key)
                    break
                third = rows // 3
                for n, part in enumerate(parts):
                    out[match.expand(target.replace("{}", part))] = tensor[n * third : (n + 1) * third]
                break
        else:
            for pattern, target in _COMPILED_RENAMES:
                match = pattern.fullmatch(key)
                if match:
                    out[match.expand(target)] = tensor
                    break
            else:
                unknown.append(key)
    return out, unknown


def read_state_dict(path: Path) -> dict[str, Any]:
    """The original state dict of a checkpoint (``{"model": ...}`` or bare), read without pickled code."""
    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise ModelArtifactsError(
            path, f"cannot be read as a Grounding DINO checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(content, Mapping) and isinstance(content.get("model"), Mapping):
        content = content["model"]
    if not isinstance(content, Mapping) or not all(isinstance(k, str) for k in content):
        raise ModelArtifactsError(path, 'must hold a state dict (or {"model": state dict})')
    state = {k.removeprefix("module."): v for k, v in content.items()}
    if "backbone.0.patch_embed.proj.weight" not in state or "feat_map.weight" not in state:
        raise ModelArtifactsError(
            path, "is not an original Grounding DINO state dict (no backbone.0.patch_embed / feat_map tensors)"
        )
    return state


def read_config_py(path: Path) -> dict[str, Any]:
    """The literal top-level assignments of a ``groundingdino`` config file (``name = value``)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ModelArtifactsError(path, f"cannot be parsed as a Grounding DINO config ({exc})") from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal (an expression, a call): not something the network's shape needs
    return values


def _count(state: Mapping[str, Any], template: str) -> int:
    n = 0
    while template.format(n) in state:
        n += 1
    return n


def network_config(state: Mapping[str, Any], text_config: Any, options: Mapping[str, Any], where: Path) -> Any:
    """transformers' ``GroundingDinoConfig`` of an original state dict (shapes) and its config values."""
    from transformers import GroundingDinoConfig

    def tensor(key: str) -> Any:
        if key not in state:
            raise ModelArtifactsError(where, f"lacks {key}: not a complete Grounding DINO state dict")
        return state[key]

    if options.get("two_stage_type", "standard") != "standard" or not options.get("use_fusion_layer", True):
        raise ModelArtifactsError(
            where,
            "configures a Grounding DINO variant transformers does not implement (two_stage_type "
            "'standard' with text enhancer and fusion layers only)",
        )
    heads = int(options.get("nheads", DEFAULT_HEADS))
    patch = tensor("backbone.0.patch_embed.proj.weight")
    embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    stages = _count(state, "backbone.0.layers.{}.blocks.0.norm1.weight")
    depths = [_count(state, f"backbone.0.layers.{i}.blocks.{{}}.norm1.weight") for i in range(stages)]
    tables = [tensor(f"backbone.0.layers.{i}.blocks.0.attn.relative_position_bias_table") for i in range(stages)]
    swin_heads = [int(t.shape[1]) for t in tables]
    window = (math.isqrt(int(tables[0].shape[0])) + 1) // 2
    out_indices = [i + 1 for i in range(stages) if f"backbone.0.norm{i}.weight" in state]
    d_model = int(tensor("feat_map.weight").shape[0])
    if int(tensor("feat_map.weight").shape[1]) != int(text_config.hidden_size):
        raise ModelArtifactsError(
            where,
            f"projects text features of size {int(state['feat_map.weight'].shape[1])}, but the BERT "
            f"config says {text_config.hidden_size}: the checkpoint and its BERT do not belong together",
        )
    levels = int(tensor("transformer.level_embed").shape[0])
    encoder_layers = _count(state, "transformer.encoder.layers.{}.norm1.weight")
    decoder_layers = _count(state, "transformer.decoder.layers.{}.norm1.weight")
    enc_weights = int(tensor("transformer.encoder.layers.0.self_attn.attention_weights.weight").shape[0])
    dec_weights = int(tensor("transformer.decoder.layers.0.cross_attn.attention_weights.weight").shape[0])
    if enc_weights % (heads * levels) or dec_weights % (heads * levels):
        raise ModelArtifactsError(
            where, f"has deformable attention sizes that do not fit {heads} heads and {levels} levels"
        )
    first, second = "bbox_embed.0.layers.0.weight", "bbox_embed.1.layers.0.weight"
    shared = first in state and (second not in state or bool((state[first] == state[second]).all()))
    return GroundingDinoConfig(
        backbone_config={
            "model_type": "swin",
            "embed_dim": embed_dim,
            "depths": depths,
            "num_heads": swin_heads,
            "window_size": window,
            "patch_size": patch_size,
            "out_indices": out_indices,
        },
        text_config=text_config.to_dict(),
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_ffn_dim=int(tensor("transformer.encoder.layers.0.linear1.weight").shape[0]),
        decoder_ffn_dim=int(tensor("transformer.decoder.layers.0.linear1.weight").shape[0]),
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        num_queries=int(tensor("transformer.tgt_embed.weight").shape[0]),
        num_feature_levels=levels,
        encoder_n_points=enc_weights // (heads * levels),
        decoder_n_points=dec_weights // (heads * levels),
        max_text_len=int(options.get("max_text_len", DEFAULT_MAX_TEXT_LEN)),
        decoder_bbox_embed_share=shared,
        two_stage_bbox_embed_share=bool(options.get("two_stage_bbox_embed_share", False)),
        activation_function=str(options.get("transformer_activation", "relu")),
        positional_embedding_temperature=int(options.get("pe_temperatureH", 20)),
    )


def build_network(
    state: Mapping[str, Any],
    text_config: Any,
    text_weights: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    where: Path,
) -> Any:
    """``GroundingDinoForObjectDetection`` holding the checkpoint's weights (eval mode, float32).

    ``text_weights``: BERT's own state dict (the hub snapshot's), used where the checkpoint has no
    ``bert.*`` tensors."""
    import torch
    from transformers import GroundingDinoForObjectDetection

    config = network_config(state, text_config, options, where)
    renamed, unknown = to_transformers(state)
    if unknown:  # extra tensors cannot change the network; a missing one fails below
        logger.warning(
            "%s: ignoring %d tensors transformers' Grounding DINO has no place for, e.g. %s",
            where,
            len(unknown),
            ", ".join(sorted(unknown)[:3]),
        )
    if not any(k.startswith("model.text_backbone.") for k in renamed) and text_weights is not None:
        for key, value in text_weights.items():
            key = key.removeprefix("bert.")
            if not key.startswith(("pooler.", "cls.")) and key != "embeddings.position_ids":
                renamed[f"model.text_backbone.{key}"] = value
    network = GroundingDinoForObjectDetection(config)
    try:
        missing, unexpected = network.load_state_dict(renamed, strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the one its neighbours imply
        raise ModelArtifactsError(where, f"does not fit transformers' Grounding DINO ({exc})") from None
    missing = [k for k in missing if k not in UNUSED_TARGETS]
    if missing or unexpected:
        raise ModelArtifactsError(
            where,
            f"does not fit transformers' Grounding DINO: {len(missing)} missing tensors (e.g. "
            f"{', '.join(missing[:3]) or '-'}), {len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3]) or '-'})",
        )
    return network.eval().to(torch.float32)


__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "LEGACY_CONFIG",
    "LEGACY_FILE",
    "PACKAGE_FILES",
    "UNUSED_TARGETS",
    "build_network",
    "network_config",
    "read_config_py",
    "read_state_dict",
    "to_transformers",
]
