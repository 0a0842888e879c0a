"""Pure parts of the VLM engine and artifacts: dtype and 4-bit choices, archives, cache states."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_dtype_choice():
    from edge_agent.models.engines.transformers import choose_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_dtype(torch, cpu, "auto") is torch.float32  # float32 on the CPU unless told otherwise
    assert choose_dtype(torch, cuda, "auto") is torch.float16
    assert choose_dtype(torch, cpu, "bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="VLM_DTYPE"):
        choose_dtype(torch, cpu, "int8")


def test_four_bit_only_on_cuda(monkeypatch):
    import importlib.util

    from edge_agent.models.common.errors import MissingExtraError, ModelRuntimeError
    from edge_agent.models.engines import transformers as engine

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not engine.wants_4bit(cpu, "auto") and not engine.wants_4bit(cuda, "none")
    with pytest.raises(ModelRuntimeError, match="CUDA"):
        engine.wants_4bit(cpu, "4bit")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name))
    assert not engine.wants_4bit(cuda, "auto")  # no bitsandbytes: full precision
    with pytest.raises(MissingExtraError, match="bitsandbytes"):
        engine.wants_4bit(cuda, "4bit")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "bitsandbytes" else real(name))
    assert engine.wants_4bit(cuda, "auto")


def test_generation_settings_are_greedy_without_ngram_ban():
    from edge_agent.models.engines.transformers import GenerationSettings

    assert GenerationSettings(max_new_tokens=7).kwargs() == {
        "max_new_tokens": 7,
        "do_sample": False,
        "num_beams": 1,
        "no_repeat_ngram_size": 0,
    }
    assert GenerationSettings(max_new_tokens=7, num_beams=3).kwargs()["early_stopping"] is False


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_unpack_refuses_paths_outside(tmp_path: Path):
    from edge_agent.models.common.errors import CacheIntegrityError
    from edge_agent.models.foundation.vlm_artifacts import unpack

    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(_tar({"../escape.txt": b"x"}))
    target = tmp_path / "model"
    target.mkdir()
    with pytest.raises(CacheIntegrityError, match="escape"):
        unpack(archive, target)
    assert not (tmp_path / "escape.txt").exists()


def test_archive_with_a_top_folder_and_cache_states(tmp_path: Path):
    from edge_agent.models.foundation.vlm_artifacts import checkpoint_root, hf_state, unpack

    target = tmp_path / "model"
    target.mkdir()
    archive = target / "weights.tar.gz"
    archive.write_bytes(_tar({"florence/config.json": b"{}", "florence/model.safetensors": b"w"}))
    assert hf_state(target).missing == ("manifest",)
    unpack(archive, target)
    assert checkpoint_root(target) == target / "florence"
    # a directory Roboflow filled (no manifest of ours) is used as it is
    assert hf_state(target).complete
    # a manifest of ours is checked: sizes as recorded at download
    from edge_agent.models.artifacts import cache

    (target / cache.MANIFEST_FILE).write_text(json.dumps({"files": {"weights.tar.gz": {"size": 1}}}))
    state = hf_state(target)
    assert not state.complete and "recorded at download" in state.corrupt[0]
