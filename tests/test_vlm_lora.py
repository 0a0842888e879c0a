"""LoRA fine-tunes (``florence-2-base-peft``): an adapter made with peft on a tiny Florence-2, its base
from the package's ``base/`` folder or from ``/lora_bases``, merged into the weights; the merge is
checked against W + (alpha / r) * B @ A computed here with numpy from the saved files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

BASE = "microsoft/Florence-2-base-ft"
LAYER = "model.language_model.decoder.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def adapter_and_base(tmp_path_factory):
    from transformers import Florence2ForConditionalGeneration

    from tests.vlm_factory import florence_checkpoint, lora_adapter

    root = tmp_path_factory.mktemp("lora")
    base = florence_checkpoint(root / "base", answer="a car<loc_1><loc_2><loc_3><loc_4>")
    adapter = lora_adapter(base, root / "adapter", Florence2ForConditionalGeneration, BASE, rank=4, alpha=8)
    return adapter, base


def _expected_merge(adapter, base) -> np.ndarray:
    from safetensors.numpy import load_file

    base_w = load_file(str(base / "model.safetensors"))[f"{LAYER}.weight"]
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    a = lora[f"base_model.model.{LAYER}.lora_A.weight"]  # (r, in)
    b = lora[f"base_model.model.{LAYER}.lora_B.weight"]  # (out, r)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8)
    delta = (8 / 4) * (b.astype(np.float64) @ a.astype(np.float64))
    assert np.abs(delta).max() > 1e-3  # a real change, not a zero-initialised B
    return base_w.astype(np.float64) + delta


def _weight(model) -> np.ndarray:
    state = model.engine.model.state_dict()
    return state[f"{LAYER}.weight"].detach().numpy().astype(np.float64)


def test_adapter_package_with_base_folder_is_merged(tmp_path, model_server, model_env, adapter_and_base):
    from edge_agent.models import get_model
    from tests.vlm_factory import tar_gz

    adapter, base = adapter_and_base
    package = tmp_path / "package"
    shutil.copytree(adapter, package)
    shutil.copytree(base, package / "base")
    model_server.add_hf_model(
        "my-project", "2", {"weights.tar.gz": tar_gz(package)}, "object-detection", "florence-2-base-peft"
    )
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("my-project/2")
    assert model.engine.merged_adapter
    assert not any("lora" in name for name in model.engine.model.state_dict())  # merge_and_unload
    np.testing.assert_allclose(_weight(model), _expected_merge(adapter, base), rtol=0, atol=1e-5)
    answer = model.ask(np.zeros((100, 200, 3), np.uint8), prompt="<OD>")
    assert answer.response == {"<OD>": {"bboxes": [pytest.approx([0.3, 0.25, 0.7, 0.45])], "labels": ["a car"]}}
    assert model_server.count("/lora_bases") == 0


def test_adapter_base_from_lora_bases_is_fetched_once(tmp_path, model_server, model_env, adapter_and_base):
    from edge_agent.models import get_model
    from tests.vlm_factory import files_of, tar_gz

    adapter, base = adapter_and_base
    files = files_of(adapter)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"):
        files[name] = (base / name).read_bytes()  # Roboflow's adapter file list
    model_server.add_hf_model("my-project", "3", files, "text-image-pairs", "florence-2-base-peft")
    model_server.add_lora_base(f"{BASE}/main", {"model.tar.gz": tar_gz(base)})
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    model = get_model("my-project/3")
    np.testing.assert_allclose(_weight(model), _expected_merge(adapter, base), rtol=0, atol=1e-5)
    home = model_env.cache_dir / "lora-bases" / "microsoft" / "Florence-2-base-ft" / "main"
    assert (home / "config.json").is_file() and (home / "model.tar.gz").is_file()
    assert model_server.count("/lora_bases") == 1
    model_env.set(OFFLINE_MODE="true", API_BASE_URL="http://127.0.0.1:9")
    again = get_model("my-project/3")
    np.testing.assert_allclose(_weight(again), _weight(model), rtol=0, atol=0)
    assert model_server.count("/lora_bases") == 1


def test_base_in_roboflow_slug_directory_is_used(tmp_path, model_server, model_env, adapter_and_base):
    from edge_agent.models import get_model
    from edge_agent.models.foundation.vlm_artifacts import lora_base_dirs
    from tests.vlm_factory import files_of

    adapter, base = adapter_and_base
    files = files_of(adapter)
    files["tokenizer.json"] = (base / "tokenizer.json").read_bytes()
    files["tokenizer_config.json"] = (base / "tokenizer_config.json").read_bytes()
    files["preprocessor_config.json"] = (base / "preprocessor_config.json").read_bytes()
    model_server.add_hf_model("my-project", "4", files, "text-image-pairs", "florence-2-base-peft")
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    _, slugged = lora_base_dirs(BASE, "main", model_env.cache_dir)
    assert slugged.name.startswith("~lora-bases-")
    shutil.copytree(base, slugged)  # as a newer Roboflow placed it
    model = get_model("my-project/4")
    np.testing.assert_allclose(_weight(model), _expected_merge(adapter, base), rtol=0, atol=1e-5)
    assert model_server.count("/lora_bases") == 0


def test_bad_base_name_is_refused(model_env):
    from edge_agent.models.common.errors import InvalidModelIdError
    from edge_agent.models.foundation.vlm_artifacts import lora_base_dirs

    with pytest.raises(InvalidModelIdError):
        lora_base_dirs("../../etc", "main", model_env.cache_dir)
