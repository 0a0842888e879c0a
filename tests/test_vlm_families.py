"""PaliGemma / PaliGemma 2, Qwen2.5-VL and SmolVLM2: tiny random-weight checkpoints served in
Roboflow's layouts and loaded through ``get_model``; prompt assembly and input slicing checked
against token sequences built by hand, answers against the checkpoint's known greedy chain."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("PIL")

ANSWER = "a red car"


def _picture(width: int, height: int):
    from PIL import Image

    return Image.fromarray(np.zeros((height, width, 3), np.uint8))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from tests.vlm_factory import paligemma_checkpoint, qwen25vl_checkpoint, smolvlm_checkpoint

    root = tmp_path_factory.mktemp("families")
    return {
        "paligemma": paligemma_checkpoint(root / "pg", ANSWER, version=1),
        "paligemma2": paligemma_checkpoint(root / "pg2", ANSWER, version=2),
        "qwen": qwen25vl_checkpoint(root / "qwen", ANSWER),
        "smolvlm": smolvlm_checkpoint(root / "smol", ANSWER),
    }


@pytest.mark.parametrize(
    ("key", "model_type"), [("paligemma", "paligemma-3b-pt-224"), ("paligemma2", "paligemma2-3b-pt-224")]
)
def test_paligemma_raw_prompt_and_sliced_answer(model_server, model_env, checkpoints, key, model_type):
    from edge_agent.models import get_model
    from tests.vlm_factory import tar_gz

    model_server.add_hf_model(
        "paligemma-pretrains", "1", {"weights.tar.gz": tar_gz(checkpoints[key])}, "text-image-pairs", model_type
    )
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("paligemma-3b-mix-224")
    tokenizer = model.processor.tokenizer
    inputs = model.family.inputs(model.processor, _picture(30, 20), "caption en")
    # 4 image tokens (28 px / 14 px patches = 2 x 2), <bos>, the raw prompt, "\n"
    image, bos = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<bos>")
    expected = [image] * 4 + [bos] + tokenizer.encode("caption en\n", add_special_tokens=False)
    assert inputs["input_ids"][0].tolist() == expected
    answer = model.ask(np.zeros((20, 30, 3), np.uint8), prompt="caption en")
    # the prompt's tokens are sliced off; <eos> is a special token and not in the text
    assert answer.to_response() == {"response": ANSWER, "image": {"width": 30, "height": 20}}
    assert answer.new_tokens == len(tokenizer.encode(ANSWER, add_special_tokens=False)) + 1  # + <eos>
    model_env.set(PALIGEMMA_ENABLED="false")
    from edge_agent.models.common.errors import ModelDisabledError

    with pytest.raises(ModelDisabledError, match="PALIGEMMA_ENABLED"):
        get_model("paligemma-3b-mix-224")


def test_qwen_system_prompt_split():
    from edge_agent.models.foundation.vlm_families import QWEN25VL

    assert QWEN25VL.split("How many cars?<system_prompt>Answer with a number.") == (
        "How many cars?",
        "Answer with a number.",
    )
    assert QWEN25VL.split("How many cars?") == (
        "How many cars?",
        "You are a Qwen2.5-VL model that can answer questions about any image.",
    )
    assert QWEN25VL.split("<system_prompt>Be brief.") == ("Describe what's in this image.", "Be brief.")


def test_qwen_pretrained_adapter_package_uses_its_base(tmp_path, model_server, model_env, checkpoints):
    """Roboflow ships qwen25-vl-7b as an adapter package whose base comes from /lora_bases; the
    non-PEFT type uses the base alone (the adapter is not attached)."""
    from safetensors.numpy import load_file
    from transformers import Qwen2_5_VLForConditionalGeneration

    from edge_agent.models import get_model
    from tests.vlm_factory import files_of, lora_adapter, tar_gz

    base = checkpoints["qwen"]
    adapter = lora_adapter(base, tmp_path / "adapter", Qwen2_5_VLForConditionalGeneration, "qwen/qwen25vl-7b")
    files = files_of(adapter)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "preprocessor_config.json",
        "chat_template.json",
    ):
        files[name] = (base / name).read_bytes()
    model_server.add_hf_model("qwen-pretrains", "1", files, "text-image-pairs", "qwen25-vl-7b")
    model_server.add_lora_base("qwen/qwen25vl-7b/main", {"model.tar.gz": tar_gz(base)})
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("qwen25-vl-7b")
    assert (model_env.cache_dir / "lora-bases" / "qwen" / "qwen25vl-7b" / "main" / "config.json").is_file()
    saved = load_file(str(base / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    loaded = model.engine.model.state_dict()["model.language_model.layers.0.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(loaded, saved)  # the adapter (a targeted q_proj) was not merged
    processor = model.processor
    inputs = model.family.inputs(processor, _picture(50, 40), "How many cars?<system_prompt>Be brief.")
    # 40 x 50 is resized to 56 x 84 (min_pixels 56*56, multiples of 28): 4 x 6 patches, 2 x 2 merged: 6 tokens
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        + "<|image_pad|>" * 6
        + "<|vision_end|>How many cars?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert inputs["input_ids"][0].tolist() == processor.tokenizer.encode(expected, add_special_tokens=False)
    answer = model.ask(np.zeros((40, 50, 3), np.uint8), prompt="How many cars?<system_prompt>Be brief.")
    assert answer.response == ANSWER


def test_qwen_disabled_by_its_flag(model_server, model_env, checkpoints):
    from edge_agent.models import get_model
    from edge_agent.models.common.errors import ModelDisabledError
    from tests.vlm_factory import files_of

    model_server.add_hf_model("qwen-pretrains", "1", files_of(checkpoints["qwen"]), "text-image-pairs", "qwen25-vl-7b")
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true", QWEN_2_5_ENABLED="false")
    with pytest.raises(ModelDisabledError, match="QWEN_2_5_ENABLED"):
        get_model("qwen25-vl-7b")


def test_smolvlm_chat_prompt_and_answer_without_transcript(model_server, model_env, checkpoints):
    from edge_agent.models import get_model
    from tests.vlm_factory import files_of

    model_server.add_core_model("smolvlm2", "smolvlm-2.2b-instruct", files_of(checkpoints["smolvlm"]))
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("smolvlm2/smolvlm-2.2b-instruct")
    assert (model_env.cache_dir / "smolvlm2" / "smolvlm-2.2b-instruct" / "config.json").is_file()
    processor = model.processor
    inputs = model.family.inputs(processor, _picture(80, 40), "What is this?")
    # 80 x 40 -> 64 x 32 (longest edge 64): two 32 px tiles in one row, then the global picture; 4 tokens each
    tile = "<image>" * 4
    expected = (
        "<|im_start|>User:"
        f"<fake_token_around_image><row_1_col_1>{tile}<fake_token_around_image><row_1_col_2>{tile}\n\n"
        f"<fake_token_around_image><global-img>{tile}<fake_token_around_image>"
        "What is this?<end_of_utterance>\nAssistant:"
    )
    assert inputs["input_ids"][0].tolist() == processor.tokenizer.encode(expected, add_special_tokens=False)
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 3, 32, 32)
    answer = model.ask(np.zeros((40, 80, 3), np.uint8), prompt="What is this?")
    # the new text only: no "User:...Assistant:" transcript, as Roboflow's legacy class returned
    assert answer.response == ANSWER
