"""Package choice per box (pure): Roboflow's filters and ranking, each rejection with its reason."""

from __future__ import annotations

import pytest

from edge_agent.models.artifacts.packages.layout import check_file_handle, legacy_slug, slug
from edge_agent.models.artifacts.packages.manifest import ModelPackage, PackageFile, TrtDetails, parse_package
from edge_agent.models.artifacts.packages.selection import Box, Gpu, Preferences, choose, max_opset, rank
from edge_agent.models.common.errors import ModelDownloadError, NoSuitablePackageError

FILES = (PackageFile("weights.onnx", "http://x/w", "0" * 32),)
CPU = Box(
    device="cpu", engines=frozenset({"onnx", "torch-script"}), onnxruntime_version="1.20.1", torch_version="2.13.0"
)
H200 = Box(
    device="cuda",
    engines=frozenset({"onnx", "torch-script", "trt"}),
    onnxruntime_version="1.20.1",
    onnx_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    torch_version="2.13.0",
    gpus=(Gpu("nvidia-h200", "9.0"),),
    trt_version="10.3.0",
)
ORIN = Box(
    device="cuda",
    engines=frozenset({"onnx", "trt"}),
    onnxruntime_version="1.20.1",
    onnx_providers=("CUDAExecutionProvider",),
    gpus=(Gpu("orin", "8.7"),),
    trt_version="8.6.2",
    jetson=True,
    l4t_version="36.4.0",
)


def pkg(package_id: str, backend: str = "onnx", quantization: str = "fp32", **fields) -> ModelPackage:
    fields.setdefault("trusted", True)
    fields.setdefault("dynamic_batch", True)
    if backend == "onnx":
        fields.setdefault("opset", 17)
    if backend == "torch-script":
        fields.setdefault("supported_device_types", ("cpu", "cuda"))
        fields.setdefault("torch_version", "2.1.0")
    return ModelPackage(package_id, backend, quantization, FILES, **fields)


def trt(package_id: str, **details) -> ModelPackage:
    values = dict(
        cuda_device_type="nvidia-h200",
        cuda_device_cc="9.0",
        cuda_version="12.4",
        trt_version="10.3.0",
        machine_type="gpu-server",
    )
    values.update(details)
    return pkg(package_id, "trt", "fp16", trt=TrtDetails(**values))


def reasons(packages, box, prefs=None):
    return dict(rank(packages, box, prefs or Preferences())[1])


def test_cpu_box_takes_fp32_onnx_and_says_why_not_the_others():
    packages = [
        pkg("fp16onnx", quantization="fp16"),
        pkg("int8onnx", quantization="int8"),
        pkg("fp32onnx"),
        pkg("script", "torch-script"),
        trt("plan"),
    ]
    selection = choose("m/1", packages, CPU, Preferences())
    assert selection.chosen.package_id == "fp32onnx"
    assert [p.package_id for p in selection.ranked] == ["fp32onnx", "script"]  # ONNX 6 > TorchScript 3
    why = dict(selection.rejected)
    assert "fp16 is not among unknown, fp32, bf16" in why["fp16onnx"]
    assert "int8" in why["int8onnx"]  # int8 only when asked for
    assert why["plan"] == "no trt runtime installed here"


def test_gpu_box_prefers_tensorrt_then_fp16_onnx():
    packages = [pkg("fp32onnx"), pkg("fp16onnx", quantization="fp16"), trt("plan")]
    assert choose("m/1", packages, H200, Preferences()).chosen.package_id == "plan"
    box = Box(**{**H200.__dict__, "engines": frozenset({"onnx", "torch-script"})})
    assert choose("m/1", packages, box, Preferences()).chosen.package_id == "fp16onnx"  # fp16 > fp32 on a GPU


def test_overrides_package_id_backends_and_quantization():
    packages = [pkg("fp32onnx"), pkg("script", "torch-script"), pkg("int8onnx", quantization="int8")]
    assert choose("m/1", packages, CPU, Preferences(backends=("torch-script", "onnx"))).chosen.package_id == "script"
    assert choose("m/1", packages, CPU, Preferences(package_id="script")).chosen.package_id == "script"
    assert choose("m/1", packages, CPU, Preferences(quantizations=("int8", "fp32"))).chosen.package_id == "int8onnx"
    with pytest.raises(NoSuitablePackageError, match=r"MODEL_PACKAGE_ID names no package .*fp32onnx, script"):
        choose("m/1", packages, CPU, Preferences(package_id="nosuch"))


def test_untrusted_batch_opset_and_provider_filters():
    packages = [
        pkg("untrusted", trusted=False),
        pkg("static32", dynamic_batch=False, static_batch=32),
        pkg("opset23", opset=23),
        pkg("nocpu", incompatible_providers=("CPUExecutionProvider",)),
        pkg("static1", dynamic_batch=False, static_batch=1),
    ]
    why = reasons(packages, CPU, Preferences(batch_size=(1, 16)))
    assert "trusted" in why["untrusted"]
    assert why["static32"] == "static batch 32 is outside the batch sizes 1..16 this agent sends"
    assert "opset 23 is newer than onnxruntime 1.20.1 runs (<= 21)" == why["opset23"]
    assert "CPUExecutionProvider, the first execution provider" in why["nocpu"]
    assert "static1" not in why
    ranked = choose("m/1", packages, CPU, Preferences(allow_untrusted=True)).ranked
    assert [p.package_id for p in ranked][-1] == "untrusted"  # allowed, but a trusted package ranks first


def test_opset_limits_follow_the_onnxruntime_version():
    assert [max_opset(v) for v in ("1.16.3", "1.17.0", "1.20.1", "1.21.0", "1.22.0", "1.32.0", None)] == [
        19,
        20,
        21,
        22,
        23,
        23,
        19,
    ]


def test_torchscript_device_and_torch_version():
    packages = [
        pkg("cudaonly", "torch-script", supported_device_types=("cuda",)),
        pkg("newtorch", "torch-script", torch_version="3.0"),
        pkg("tv", "torch-script", torchvision_version="0.20"),
    ]
    why = reasons(packages, CPU)
    assert why == {
        "cudaonly": "built for cuda, not cpu",
        "newtorch": "needs torch >= 3.0, this box has 2.13.0",
        "tv": "needs torchvision >= 0.20, which is not installed",
    }


def test_tensorrt_matches_gpu_compute_capability_versions_and_jetson():
    packages = [
        trt("exact"),
        trt("othergpu", cuda_device_type="nvidia-a100"),
        trt("samecc", cuda_device_type="nvidia-gh200", same_cc_compatible=True),
        trt("oldtrt", trt_version="8.6.1"),
        trt("forward", trt_version="10.0.0", trt_forward_compatible=True),
        trt("jetsonpkg", machine_type="jetson", l4t_version="36.4.0"),
    ]
    why = reasons(packages, H200)
    assert set(why) == {"othergpu", "oldtrt", "jetsonpkg"}
    assert why["othergpu"] == "built for nvidia-a100; this box has nvidia-h200"
    assert why["oldtrt"] == "built with TensorRT 8.6.1, this box has 10.3.0"
    assert "a jetson" in why["jetsonpkg"]
    ranked = [p.package_id for p in rank(packages, H200, Preferences())[0]]
    assert ranked[0] == "exact"  # not forward-compatible and not same-CC first
    orin = [
        trt(
            "l4t36",
            cuda_device_type="orin",
            cuda_device_cc="8.7",
            trt_version="8.6.2",
            machine_type="jetson",
            l4t_version="36.4.3",
        ),
        trt(
            "l4t35",
            cuda_device_type="orin",
            cuda_device_cc="8.7",
            trt_version="8.6.2",
            machine_type="jetson",
            l4t_version="35.4.1",
        ),
    ]
    assert reasons(orin, ORIN) == {"l4t35": "built for L4T 35.4.1, this box has 36.4.0"}
    assert reasons([trt("exact")], CPU)["exact"] == "no trt runtime installed here"
    cpu_with_trt = Box(**{**CPU.__dict__, "engines": frozenset({"onnx", "trt"})})
    assert reasons([trt("exact")], cpu_with_trt, Preferences(quantizations=("fp16",)))["exact"] == (
        "TensorRT engines need a CUDA device"
    )


def test_no_engine_for_other_backends_and_an_error_listing_every_reason():
    packages = [pkg("hf", "hugging-face"), pkg("ul", "ultralytics")]
    with pytest.raises(NoSuitablePackageError) as info:
        choose("m/1", packages, CPU, Preferences())
    assert "hf: edge-agent has no engine for hugging-face packages" in str(info.value)
    assert "MODEL_PACKAGE_BACKENDS" in str(info.value)


def test_manifests_are_parsed_and_bad_ones_dropped(caplog):
    good = {
        "type": "external-model-package-v1",
        "packageId": "abc123",
        "trustedSource": True,
        "packageManifest": {
            "type": "onnx-model-package-v1",
            "backendType": "onnx",
            "quantization": "fp32",
            "opset": 17,
            "dynamicBatchSize": False,
            "staticBatchSize": 1,
        },
        "packageFiles": [{"fileHandle": "weights.onnx", "downloadUrl": "https://x/w", "md5Hash": "a" * 32}],
        "someFutureKey": 1,
    }
    parsed = parse_package(good)
    assert parsed is not None and (parsed.backend, parsed.static_batch, parsed.opset) == ("onnx", 1, 17)
    bad_batch = {**good, "packageManifest": {**good["packageManifest"], "staticBatchSize": None}}
    bad_md5 = {**good, "packageFiles": [{"fileHandle": "w.onnx", "downloadUrl": "https://x", "md5Hash": "ABC"}]}
    escape = {**good, "packageFiles": [{"fileHandle": "../../etc/passwd", "downloadUrl": "https://x"}]}
    oak = {**good, "packageManifest": {"type": "oak-model-package-v1"}}
    unknown = {**good, "packageManifest": {"type": "new-model-package-v9"}}
    assert [parse_package(p) for p in (bad_batch, bad_md5, escape, oak, unknown)] == [None] * 5
    text = caplog.text
    assert "staticBatchSize" in text and "md5Hash 'ABC'" in text and "'..'" in text and "new-model-package-v9" in text
    assert "oak" not in text  # dropped silently, as Roboflow does


def test_slugs_match_roboflow_and_handles_cannot_escape():
    assert slug("someproj/1") == "v2-someproj-1-066a327c1891f15149433cec65a9738a"
    assert slug("clip/ViT-B-16") == "v2-clip-ViT-B-16-209529c29627a4a379adf65002940e2a"
    assert slug("pp-ocrv6-det/small") == "v2-pp-ocrv6-det-small-9b0084fd81f251744432ce99c16292c9"
    assert legacy_slug("clip/ViT-B-16") == "~clip-ViT-B-16-209529c29627a4a379adf65002940e2a"
    assert check_file_handle("sub/dir/weights.onnx") == "sub/dir/weights.onnx"
    for handle in ("../x", "/abs", "a//b", "./a", "model_config.json", "dependencies/x", ".weights.onnx.lock", "a b"):
        with pytest.raises(ModelDownloadError):
            check_file_handle(handle)
