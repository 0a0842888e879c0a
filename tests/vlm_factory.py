"""Tiny vision-language checkpoints with random weights, built from transformers' own config classes.

No real weights can be downloaded, so each family is built small (a few hundred thousand
parameters) from its library classes, with a byte-level BPE tokenizer trained here on a few
sentences (plus the family's special tokens), and saved as Hugging Face files in the layout
Roboflow serves (config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, preprocessor_config.json).

``answer=`` makes the checkpoint's greedy answer known: its generation_config.json carries a
``sequence_bias`` chain (token a followed by token b gets +100), so the real ``generate`` of the real
model writes exactly that text whatever the random weights say. Tests then check what is ours:
prompt assembly, input slicing, special tokens, parsing, against hand-computed values.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path
from typing import Any

CORPUS = [
    "What does the image describe?",
    "Locate the objects with category name in the image.",
    "What is the text in the image?",
    "Describe in detail what is shown in the image.",
    "Describe what's in this image.",
    "a red car on a road and a blue truck",
    "caption en answer briefly",
    "You are a Qwen2.5-VL model that can answer questions about any image.",
    "system user assistant Assistant: User:",
]


def make_tokenizer(
    special: list[str], added: list[str], extra_special: dict[str, str], vocab_size: int = 400, **names: str
) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=names.get("unk_token")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=extra_special, **names)
    if added:
        fast.add_tokens(added, special_tokens=False)
    return fast


def answer_chain(start: list[int], answer: list[int], eos: int) -> list[list[Any]]:
    """generation_config ``sequence_bias`` entries that make greedy decoding follow start -> answer -> eos."""
    chain = [*start, *answer, eos]
    return [[[a, b], 100.0] for a, b in itertools.pairwise(chain)]


def _finish(directory: Path, tokenizer: Any, chain: list[list[Any]] | None) -> None:
    (directory / "special_tokens_map.json").write_text(
        json.dumps({k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)})
    )
    if chain is not None:
        path = directory / "generation_config.json"
        config = json.loads(path.read_text())
        config["sequence_bias"] = chain
        path.write_text(json.dumps(config, indent=2))


# -- Florence-2 ------------------------------------------------------------------------------------

FLORENCE_EXTRA = [f"<loc_{i}>" for i in range(1000)] + [
    "<od>",
    "</od>",
    "<ocr>",
    "</ocr>",
    "<poly>",
    "</poly>",
    "<sep>",
]


def florence_tokenizer() -> Any:
    return make_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>", "<image>"],
        FLORENCE_EXTRA,
        {"image_token": "<image>"},
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def florence_checkpoint(
    directory: Path, answer: str | None = None, seed: int = 0, size: int = 32, endless: bool = False
) -> Path:
    """Florence-2 (DaViT vision tower + BART), ``size`` x ``size`` input. ``endless``: the answer
    repeats until ``max_new_tokens`` (a slow model)."""
    import torch
    from transformers import BartConfig, CLIPImageProcessorPil, Florence2Config, Florence2ForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = florence_tokenizer()
    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=2048,  # room for the slow (endless) answers of the e2e tests
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
    )
    vision = {
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [16, 32],
        "num_heads": [2, 2],
        "num_groups": [2, 2],
        "window_size": 2,
        "projection_dim": 32,
        "max_position_embeddings": 16,
    }
    config = Florence2Config(
        text_config=text.to_dict(), vision_config=vision, image_token_id=tokenizer.convert_tokens_to_ids("<image>")
    )
    torch.manual_seed(seed)
    Florence2ForConditionalGeneration(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    side = size // 8  # two strided stages: 4 then 2
    CLIPImageProcessorPil(
        size={"height": size, "width": size},
        crop_size={"height": size, "width": size},
        do_center_crop=False,
        image_seq_length=side * side + 1,
    ).save_pretrained(directory)
    (directory / "processor_config.json").write_text(
        json.dumps({"processor_class": "Florence2Processor", "num_additional_image_tokens": 0})
    )
    chain = None
    if answer is not None:
        # the decoder starts from </s> (decoder_start_token_id), then <s> is forced
        ids = tokenizer.encode(answer, add_special_tokens=False)
        chain = answer_chain([2, 0], ids, ids[0] if endless else 2)
    _finish(directory, tokenizer, chain)
    return directory


# -- packaging -------------------------------------------------------------------------------------


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def tar_gz(directory: Path, prefix: str = "") -> bytes:
    """The directory as a tar.gz (members under ``prefix``), as Roboflow packs weights."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=prefix + str(path.relative_to(directory)))
    return buffer.getvalue()


# -- LoRA ------------------------------------------------------------------------------------------


def lora_adapter(
    base_dir: Path,
    directory: Path,
    model_class: Any,
    base_name: str,
    revision: str = "main",
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    rank: int = 4,
    alpha: int = 8,
    seed: int = 1,
) -> Path:
    """A peft LoRA adapter on ``base_dir``'s model, with random (non-zero) A and B, saved as Roboflow's
    adapter packages hold it (adapter_config.json naming ``base_name``@``revision``, adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = model_class.from_pretrained(str(base_dir))
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        init_lora_weights=False,  # B is zero by default, which would make the merge trivially equal
        revision=revision,
    )
    peft_model = get_peft_model(base, config)
    peft_model.save_pretrained(str(directory))
    path = directory / "adapter_config.json"
    saved = json.loads(path.read_text())
    saved["base_model_name_or_path"] = base_name
    saved["revision"] = revision
    path.write_text(json.dumps(saved, indent=2))
    return directory
