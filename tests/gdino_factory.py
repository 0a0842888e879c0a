"""Grounding DINO with random weights, saved as Roboflow's artifacts hold it (real weights cannot be had here).

A tiny ``GroundingDinoForObjectDetection`` from transformers' own config classes (tiny Swin, tiny
BERT) is written back into the ORIGINAL ``groundingdino`` key names (``backbone.0.*``, ``bert.*``,
``transformer.*``, fused ``qkv`` / ``in_proj`` matrices, the buffers and BERT pooler the original
module tree holds) as ``{"model": state_dict}`` in ``groundingdino_swint_ogc.pth``; the reverse of
the loader's renaming is written here on its own, from the original module tree. Its BERT (config,
weights, a vocabulary whose special tokens sit at bert-base-uncased's ids) goes into the Hugging
Face hub cache layout as ``google-bert/bert-base-uncased``.

:func:`rigged` makes the output predictable by hand: the decoder's last norm and the text
enhancer's last norm give constant vectors, so every query scores every caption token
``sigmoid(b . c)`` (:data:`RIGGED_LOGIT`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SHA = "89abcdef0123456789abcdef0123456789abcdef"
BERT_REPO = "google-bert/bert-base-uncased"
RIGGED_LOGIT = 2.0
WORDS = ("dog", "cat", "person", "car", "bird", "red", "a", "t", "-", "shirt", "truck", "##s")
_VOCAB_SIZE = 2100
# bert-base-uncased's ids of the tokens Grounding DINO treats specially (transformers hard-codes them)
_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}


def vocabulary() -> list[str]:
    vocab = [_SPECIAL.get(i, f"[unused{i}]") for i in range(_VOCAB_SIZE)]
    for n, word in enumerate(WORDS):
        vocab[2000 + n] = word
    return vocab


def tiny_config(heads: int = 8, queries: int = 30) -> Any:
    from transformers import BertConfig, GroundingDinoConfig, SwinConfig

    backbone = SwinConfig(
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 1, 2, 2],
        window_size=7,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=_VOCAB_SIZE,
        max_position_embeddings=64,
    )
    return GroundingDinoConfig(
        backbone_config=backbone.to_dict(),
        text_config=text.to_dict(),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        num_queries=queries,
    )


def tiny_grounding_dino(seed: int = 0, config: Any = None) -> Any:
    import torch
    from transformers import GroundingDinoForObjectDetection

    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config or tiny_config()).eval()
    with torch.no_grad():  # random GroupNorm/LayerNorm weights, so a wrong mapping shows in the outputs
        for name, param in model.named_parameters():
            if "norm" in name.lower() or name.endswith("_param"):
                param.normal_(0.0 if name.endswith("bias") else 1.0, 0.2)
    return model


def rigged(model: Any) -> Any:
    """Every query's final hidden state is ``b`` and every caption token's text feature ``c`` with
    ``b . c = RIGGED_LOGIT``: all scores are ``sigmoid(RIGGED_LOGIT)``."""
    import torch

    d = model.config.d_model
    with torch.no_grad():
        norm = model.model.decoder.layer_norm
        norm.weight.zero_()
        norm.bias.fill_(0.0)
        norm.bias[0] = 1.0
        text_norm = model.model.encoder.layers[-1].text_enhancer_layer.layer_norm_after
        text_norm.weight.zero_()
        text_norm.bias.fill_(0.0)
        text_norm.bias[0] = RIGGED_LOGIT
        text_norm.bias[d - 1] = 5.0  # b has no component there: the logit stays RIGGED_LOGIT
    return model


# -- transformers' names -> the original groundingdino module tree (the reverse of the loader) -----

_SW = r"model\.backbone\.conv_encoder\.model\."
_BACK: tuple[tuple[str, str], ...] = (
    (_SW + r"swin\.embeddings\.patch_embeddings\.projection\.(.+)", r"backbone.0.patch_embed.proj.\1"),
    (_SW + r"swin\.embeddings\.norm\.(.+)", r"backbone.0.patch_embed.norm.\1"),
    (
        _SW + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_before\.(.+)",
        r"backbone.0.layers.\1.blocks.\2.norm1.\3",
    ),
    (
        _SW + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.layernorm_after\.(.+)",
        r"backbone.0.layers.\1.blocks.\2.norm2.\3",
    ),
    (
        _SW
        + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.relative_position_bias"
        + r"\.relative_position_bias_table",
        r"backbone.0.layers.\1.blocks.\2.attn.relative_position_bias_table",
    ),
    (
        _SW + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.o_proj\.(.+)",
        r"backbone.0.layers.\1.blocks.\2.attn.proj.\3",
    ),
    (_SW + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.(.+)", r"backbone.0.layers.\1.blocks.\2.mlp.\3"),
    (_SW + r"swin\.encoder\.layers\.(\d+)\.downsample\.(.+)", r"backbone.0.layers.\1.downsample.\2"),
    (r"model\.text_backbone\.(.+)", r"bert.\1"),
    (r"model\.text_projection\.(.+)", r"feat_map.\1"),
    (r"model\.input_proj_vision\.(.+)", r"input_proj.\1"),
    (r"model\.level_embed", r"transformer.level_embed"),
    (r"model\.query_position_embeddings\.weight", r"transformer.tgt_embed.weight"),
    (r"model\.enc_output\.(.+)", r"transformer.enc_output.\1"),
    (r"model\.enc_output_norm\.(.+)", r"transformer.enc_output_norm.\1"),
    (r"model\.encoder_output_bbox_embed\.(.+)", r"transformer.enc_out_bbox_embed.\1"),
    (r"model\.decoder\.layer_norm\.(.+)", r"transformer.decoder.norm.\1"),
    (r"model\.decoder\.reference_points_head\.(.+)", r"transformer.decoder.ref_point_head.\1"),
    (r"model\.decoder\.bbox_embed\.(.+)", r"transformer.decoder.bbox_embed.\1"),
    (r"(bbox_embed\..+)", r"\1"),
)
# per encoder layer: (transformers suffix, original module, original suffix)
_ENCODER = {
    "deformable_layer.self_attn.": ("layers", "self_attn."),
    "deformable_layer.self_attn_layer_norm.": ("layers", "norm1."),
    "deformable_layer.fc1.": ("layers", "linear1."),
    "deformable_layer.fc2.": ("layers", "linear2."),
    "deformable_layer.final_layer_norm.": ("layers", "norm2."),
    "text_enhancer_layer.self_attn.out_proj.": ("text_layers", "self_attn.out_proj."),
    "text_enhancer_layer.fc1.": ("text_layers", "linear1."),
    "text_enhancer_layer.fc2.": ("text_layers", "linear2."),
    "text_enhancer_layer.layer_norm_before.": ("text_layers", "norm1."),
    "text_enhancer_layer.layer_norm_after.": ("text_layers", "norm2."),
    "fusion_layer.vision_param": ("fusion_layers", "gamma_v"),
    "fusion_layer.text_param": ("fusion_layers", "gamma_l"),
    "fusion_layer.layer_norm_vision.": ("fusion_layers", "layer_norm_v."),
    "fusion_layer.layer_norm_text.": ("fusion_layers", "layer_norm_l."),
    "fusion_layer.attn.vision_proj.": ("fusion_layers", "attn.v_proj."),
    "fusion_layer.attn.text_proj.": ("fusion_layers", "attn.l_proj."),
    "fusion_layer.attn.values_vision_proj.": ("fusion_layers", "attn.values_v_proj."),
    "fusion_layer.attn.values_text_proj.": ("fusion_layers", "attn.values_l_proj."),
    "fusion_layer.attn.out_vision_proj.": ("fusion_layers", "attn.out_v_proj."),
    "fusion_layer.attn.out_text_proj.": ("fusion_layers", "attn.out_l_proj."),
}
_DECODER = {
    "encoder_attn.": "cross_attn.",
    "encoder_attn_layer_norm.": "norm1.",
    "encoder_attn_text.out_proj.": "ca_text.out_proj.",
    "encoder_attn_text_layer_norm.": "catext_norm.",
    "self_attn.out_proj.": "self_attn.out_proj.",
    "self_attn_layer_norm.": "norm2.",
    "fc1.": "linear1.",
    "fc2.": "linear2.",
    "final_layer_norm.": "norm3.",
}
# fused in the original: (transformers pattern with {} for q/k/v, the parts, original name)
_FUSED = (
    (
        _SW + r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.attention\.{}\.(weight|bias)",
        ("q_proj", "k_proj", "v_proj"),
        r"backbone.0.layers.\1.blocks.\2.attn.qkv.\3",
    ),
    (
        r"model\.encoder\.layers\.(\d+)\.text_enhancer_layer\.self_attn\.{}\.(weight|bias)",
        ("query", "key", "value"),
        r"transformer.encoder.text_layers.\1.self_attn.in_proj_\2",
    ),
    (
        r"model\.decoder\.layers\.(\d+)\.encoder_attn_text\.{}\.(weight|bias)",
        ("query", "key", "value"),
        r"transformer.decoder.layers.\1.ca_text.in_proj_\2",
    ),
    (
        r"model\.decoder\.layers\.(\d+)\.self_attn\.{}\.(weight|bias)",
        ("query", "key", "value"),
        r"transformer.decoder.layers.\1.self_attn.in_proj_\2",
    ),
)


def original_state_dict(model: Any) -> dict[str, Any]:
    """``model``'s weights under the original ``groundingdino`` names, as its checkpoints hold them."""
    import torch

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for pattern, parts, target in _FUSED:
        first = re.compile(pattern.replace("{}", parts[0]))
        for key in [k for k in state if first.fullmatch(k)]:
            match = first.fullmatch(key)
            assert match is not None
            pieces = [state.pop(key.replace(f".{parts[0]}.", f".{p}.")) for p in parts]
            out[match.expand(target)] = torch.cat(pieces, 0)
    for key, value in state.items():
        if key.startswith(_SW.replace("\\", "") + "swin.layernorm."):
            continue  # SwinModel's final norm: the original backbone has none
        stage = re.fullmatch(_SW + r"hidden_states_norms\.stage(\d+)\.(.+)", key)
        encoder = re.fullmatch(r"model\.encoder\.layers\.(\d+)\.(.+)", key)
        decoder = re.fullmatch(r"model\.decoder\.layers\.(\d+)\.(.+)", key)
        if stage:
            out[f"backbone.0.norm{int(stage.group(1)) - 1}.{stage.group(2)}"] = value
        elif encoder:
            layer, rest = encoder.groups()
            for suffix, (module, original) in _ENCODER.items():
                if rest.startswith(suffix):
                    out[f"transformer.encoder.{module}.{layer}.{original}{rest[len(suffix) :]}"] = value
                    break
            else:
                raise AssertionError(f"no original name for {key}")
        elif decoder:
            layer, rest = decoder.groups()
            for suffix, original in sorted(_DECODER.items(), key=lambda kv: -len(kv[0])):
                if rest.startswith(suffix):
                    out[f"transformer.decoder.layers.{layer}.{original}{rest[len(suffix) :]}"] = value
                    break
            else:
                raise AssertionError(f"no original name for {key}")
        else:
            for pattern, target in _BACK:
                match = re.fullmatch(pattern, key)
                if match:
                    out[match.expand(target)] = value
                    break
            else:
                raise AssertionError(f"no original name for {key}")
    # what the original tree holds besides: Swin's index buffers, BERT's pooler and position ids
    swin = model.config.backbone_config
    window = swin.window_size
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    index = relative[:, :, 0] * (2 * window - 1) + relative[:, :, 1]
    for layer, depth in enumerate(swin.depths):
        for block in range(depth):
            out[f"backbone.0.layers.{layer}.blocks.{block}.attn.relative_position_index"] = index.clone()
    hidden = model.config.text_config.hidden_size
    out["bert.pooler.dense.weight"] = torch.randn(hidden, hidden)
    out["bert.pooler.dense.bias"] = torch.zeros(hidden)
    out["bert.embeddings.position_ids"] = torch.arange(model.config.text_config.max_position_embeddings)[None]
    return out


def write_bert_snapshot(hub: Path, model: Any, repo: str = BERT_REPO) -> Path:
    """``model``'s BERT as ``repo`` in the hub cache ``hub`` (config, weights, vocabulary)."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / SHA
    model.model.text_backbone.save_pretrained(str(snapshot))
    (snapshot / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
    (snapshot / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"})
    )
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(SHA)
    return snapshot


def write_legacy(cache: Path, model: Any, variant: str = "groundingdino_swint_ogc", *, bert: bool = True) -> Path:
    """``MODEL_CACHE_DIR/grounding_dino/<variant>/groundingdino_swint_ogc.pth`` and BERT in the hub cache."""
    import torch

    directory = cache / "grounding_dino" / variant
    directory.mkdir(parents=True, exist_ok=True)
    state = original_state_dict(model)
    if not bert:
        state = {k: v for k, v in state.items() if not k.startswith("bert.")}
    torch.save({"model": state}, directory / "groundingdino_swint_ogc.pth")
    if bert:
        write_bert_snapshot(cache / "hf_home" / "hub", model)
    return directory
