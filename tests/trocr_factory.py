"""Tiny TrOCR checkpoints with random weights, from transformers' own config classes: a ViT encoder,
a TrOCR decoder, a character-level tokenizer (``tokenizers``) and a ViT image processor, saved as a
Hugging Face directory (what Roboflow's package and the hub's ``microsoft/trocr-*`` hold).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. "
MAX_NEW_TOKENS = 10
REAL_VOCAB = 64044


def tokenizer(size: int = 0) -> Any:
    """A character-level tokenizer; ``size`` pads the vocabulary with filler tokens (real-size decoders)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARACTERS:
        vocab.setdefault(c, len(vocab))
    while len(vocab) < size:
        vocab[f"<t{len(vocab)}>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def network(tiny: bool = True, seed: int = 0) -> Any:
    """A VisionEncoderDecoderModel: tiny, or trocr-base-printed's size (ViT-B/16 at 384, 12-layer decoder)."""
    import torch
    from transformers import TrOCRConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    torch.manual_seed(seed)
    vocab = 4 + len(CHARACTERS)
    if tiny:
        encoder = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=64,
            patch_size=16,
        )
        decoder = TrOCRConfig(
            vocab_size=vocab, d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64
        )
    else:  # trocr-small-printed: DeiT-S/16 at 384, a 6-layer 256-wide decoder over 64,044 tokens
        encoder = ViTConfig(
            hidden_size=384,
            num_hidden_layers=12,
            num_attention_heads=6,
            intermediate_size=1536,
            image_size=384,
            patch_size=16,
        )
        decoder = TrOCRConfig(
            vocab_size=REAL_VOCAB, d_model=256, decoder_layers=6, decoder_attention_heads=8, decoder_ffn_dim=1024
        )
    for key, value in {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}.items():
        setattr(decoder, key, value)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 1, 2
    model = VisionEncoderDecoderModel(config).eval()
    with torch.no_grad():  # the end token never wins, so every line is MAX_NEW_TOKENS characters long
        model.decoder.output_projection.weight[2] = 0
        model.decoder.output_projection.weight.mul_(3)
    model.generation_config.decoder_start_token_id = 2
    model.generation_config.pad_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS if tiny else 16
    return model


def checkpoint_files(tiny: bool = True, seed: int = 0) -> dict[str, bytes]:
    from transformers import ViTImageProcessor

    size = 64 if tiny else 384
    with tempfile.TemporaryDirectory() as folder:
        network(tiny, seed).save_pretrained(folder)
        tokenizer(0 if tiny else REAL_VOCAB).save_pretrained(folder)
        ViTImageProcessor(
            size={"height": size, "width": size}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
        ).save_pretrained(folder)
        return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def write_checkpoint(directory: Path, tiny: bool = True, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in checkpoint_files(tiny, seed).items():
        (directory / name).write_bytes(data)
    return directory
