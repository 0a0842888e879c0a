"""Foundation families of part 2 on streams, end to end: a real agent, a real mosquitto, the test
model server.

Depth:
The depth model (tiny, random weights; v2 served from ``/core_model``, v3 as the current stack's
package) is the second model of a constant detector (STREAM_<NAME>_SECOND_MODEL_ID, boxes as
prompts): every message carries that detector's two boxes, each with the median normalised depth
inside it. The full map comes over HTTP on demand
(``/streams/NAME/depth``), and the boxes' depths are checked against the medians of that map
computed here; the live picture carries the small viridis depth picture in its top-right corner.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import av
import cv2
import jsonschema
import numpy as np
import pytest

from tests.agent_process import AgentProcess
from tests.fixtures.mosquitto import free_port
from tests.http_client import decode_jpeg, get_json, request
from tests.live_agent import known_objects_model, wait_for_picture
from tests.test_e2e_foundation import _clip_of

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "pipelines/schemas/prediction.schema.json").read_text())

pytest.importorskip("transformers")

AGENT = "depth"
# the constant detector's boxes (tests/live_agent.py), stretched from 320x320 to 320x240
BOXES = [(55.0, 45.0, 145.0, 120.0), (190.0, 142.5, 270.0, 187.5)]


def _scene() -> np.ndarray:
    rng = np.random.default_rng(5)
    image = np.zeros((240, 320, 3), np.uint8)
    image[:] = np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None]
    image[100:200, 60:200] = rng.integers(0, 255, (100, 140, 3), dtype=np.uint8)
    return image


def _median_in(depth: np.ndarray, box: tuple[float, float, float, float]) -> float:
    x1, y1, x2, y2 = box  # pixels whose centres are inside: columns ceil(x1 - 0.5) .. ceil(x2 - 0.5) - 1
    return float(
        np.median(
            depth[int(np.ceil(y1 - 0.5)) : int(np.ceil(y2 - 0.5)), int(np.ceil(x1 - 0.5)) : int(np.ceil(x2 - 0.5))]
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("depth_id", ["depth-anything-v2/small", "depth-anything-v3/small"])
def test_depth_per_detection_on_mqtt_full_map_over_http(
    tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory, depth_id
):
    from edge_agent.models.foundation.depth_maths import colorize, downscale
    from tests.depth3_factory import checkpoint_files as v3_files
    from tests.depth_factory import checkpoint_files
    from tests.fixtures.model_server import torch_package

    if depth_id.startswith("depth-anything-v2"):
        model_server.add_core_model("depth-anything-v2", "small", checkpoint_files())
    else:  # DA3: the current stack's package (edge-agent's own network on ByteDance's weights)
        package = torch_package("da3", v3_files("tiny"))
        model_server.add_package_model(depth_id, [package], "depth-anything-v3", "depth-estimation")
    detector = known_objects_model(tmp_path / "detector")
    clip = _clip_of(tmp_path / "scene.mp4", [_scene()] * 10)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": AGENT,
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": str(detector),
        "STREAMS": f"cam={clip}",
        "STREAM_CAM_SECOND_MODEL_ID": depth_id,  # the detector's boxes are its prompts
        "STREAM_CAM_LOOP": "true",
        "HEALTH_PORT": str(port),
    }
    sub = mqtt_subscriber_factory(mosquitto, [f"edge-agent/{AGENT}/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        assert sub.wait_for(lambda msgs: len(msgs) >= 3, timeout=180), agent.stderr[-3000:]
        status, body = get_json(f"{base}/streams/cam/depth?format=json", timeout=30)
        assert status == 200 and body["depth_map_format"] == "json"
        depth = np.asarray(body["normalized_depth"], np.float32)
        assert depth.shape == (240, 320) and depth.min() == 0 and depth.max() == 1
        status, png = get_json(f"{base}/streams/cam/depth", timeout=30)  # png16 by default
        grey = cv2.imdecode(np.frombuffer(base64.b64decode(png["normalized_depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert grey.dtype == np.uint16 and np.abs(grey / 65535 - depth).max() < 0.05
        assert request(f"{base}/streams/cam/depth?format=tiff")[0] == 400
        wait_for_picture(base, "cam")
        status, _, jpeg = request(f"{base}/streams/cam/latest.jpg")
        picture = decode_jpeg(jpeg)
        small = colorize(downscale(depth, 160))  # 160x120 in the top-right corner
        corner = picture[1:119, 320 - 159 : 319].astype(np.int16)
        assert np.abs(corner - small[1:119, 1:159].astype(np.int16)).mean() < 25
        agent.terminate()
    messages = [m.json() for m in sub.messages]
    for message in messages:
        jsonschema.validate(message, SCHEMA)
        assert message["second_model_id"] == depth_id
        assert [p["class"] for p in message["predictions"]] == ["widget", "gadget"]
        for p, box in zip(message["predictions"], BOXES, strict=True):
            assert (p["x"], p["y"], p["width"], p["height"]) == pytest.approx(
                ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1])
            )
            # the same frame every time (a looped still): the median of the HTTP map, within codec noise
            assert 0 <= p["depth"] <= 1 and p["depth"] == pytest.approx(_median_in(depth, box), abs=0.05)


@pytest.mark.slow
def test_gaze_per_face_per_frame_on_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    """Gaze: each message holds the face detector's faces with the yaw and pitch torch computes for
    the very frame the agent decoded (read back here with PyAV from the same clip)."""
    import torch

    from edge_agent.models.foundation.gaze import face_box, face_input
    from tests.gaze_factory import Decoded, network, onnx_bytes
    from tests.test_gaze import FACES, _face_detector

    net = network()
    model_server.add_core_model("gaze", "L2CS", {"L2CSNet_gaze360_resnet50_90bins.onnx": onnx_bytes(net)})
    rng = np.random.default_rng(2)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (9, 9), 3) for _ in range(4)]
    clip = _clip_of(tmp_path / "faces.mp4", frames)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "gaze",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "gaze/L2CS",
        "GAZE_FACE_DETECTOR_MODEL_ID": str(_face_detector(tmp_path / "faces")),
        "STREAMS": f"lobby={clip}",
        "STREAM_LOBBY_MODE": "every",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/gaze/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["frame_id"] for m in msgs}) >= len(frames), timeout=30)
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    for message in (m.json() for m in sub.messages):
        jsonschema.validate(message, SCHEMA)
        image = decoded[message["frame_id"]]
        batch = np.stack([face_input(image, face_box(np.array(b), 320, 240)) for b in FACES])
        with torch.no_grad():
            yaw, pitch = (t.numpy() for t in Decoded(net).eval()(torch.from_numpy(batch)))
        faces = message["predictions"]
        assert len(faces) == 2 and [f["face"]["class"] for f in faces] == ["face", "face"]
        for face, y, p, box in zip(faces, yaw, pitch, FACES, strict=True):
            assert face["face"]["x"] == pytest.approx((box[0] + box[2]) / 2, abs=1e-3)
            assert face["yaw"] == pytest.approx(float(y), abs=1e-3) and face["pitch"] == pytest.approx(
                float(p), abs=1e-3
            )


@pytest.mark.slow
def test_gaze_with_the_built_in_face_finder_on_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    """No GAZE_FACE_DETECTOR_MODEL_ID: the shipped Haar cascade finds the drawn face on one stream
    (each message: the face the cascade finds in that very decoded frame, its two eyes, the yaw
    and pitch torch computes for that crop) and nothing on a stream of noise."""
    import torch

    from edge_agent.models.foundation.gaze import face_box, face_input
    from edge_agent.models.foundation.haar_cascade import HaarFaceFinder
    from tests.gaze_factory import Decoded, drawn_face, network, onnx_bytes

    net = network(seed=4)
    model_server.add_core_model("gaze", "L2CS", {"L2CSNet_gaze360_resnet50_90bins.onnx": onnx_bytes(net)})
    faces = _clip_of(tmp_path / "face.mp4", [drawn_face((320, 240), (150 + 5 * i, 120), 0.9)[0] for i in range(4)])
    rng = np.random.default_rng(6)
    noise = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 3) for _ in range(4)]
    empty = _clip_of(tmp_path / "empty.mp4", noise)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "gaze",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "gaze/L2CS",
        "STREAMS": f"door={faces};wall={empty}",
        "STREAM_DOOR_MODE": "every",
        "STREAM_WALL_MODE": "every",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/gaze/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    by_stream: dict[str, list[dict]] = {"door": [], "wall": []}
    assert sub.wait_for(lambda msgs: len(msgs) >= 8, timeout=30)
    for m in sub.messages:
        message = m.json()
        jsonschema.validate(message, SCHEMA)
        by_stream[m.topic.split("/")[2]].append(message)
    assert len({m["frame_id"] for m in by_stream["door"]}) == 4 and len(by_stream["wall"]) >= 4
    assert all(m["predictions"] == [] for m in by_stream["wall"])
    with av.open(str(faces)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    finder = HaarFaceFinder()
    for message in by_stream["door"]:
        image = decoded[message["frame_id"]]
        truth = finder.find(image)
        (face,) = message["predictions"]
        x1, y1, x2, y2 = truth.boxes[0]
        assert (face["face"]["x"], face["face"]["y"], face["face"]["width"]) == pytest.approx(
            ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1)
        )
        assert face["face"]["x"] == pytest.approx(150 + 5 * message["frame_id"], abs=10)
        assert [(p["x"], p["y"]) for p in face["face"]["landmarks"]] == [(int(x), int(y)) for x, y in truth.eyes[0]]
        batch = face_input(image, face_box(truth.boxes[0], 320, 240))[None]
        with torch.no_grad():
            yaw, pitch = (t.numpy() for t in Decoded(net).eval()(torch.from_numpy(batch)))
        assert face["yaw"] == pytest.approx(float(yaw[0]), abs=1e-3)
        assert face["pitch"] == pytest.approx(float(pitch[0]), abs=1e-3)


@pytest.mark.slow
def test_trocr_on_a_streams_regions_on_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    """TrOCR on a stream: each of the stream's ROI regions is read as one line, in source pixels."""
    import transformers

    from tests.fixtures.model_server import hf_package
    from tests.trocr_factory import checkpoint_files

    files = checkpoint_files()
    model_server.add_package_model("trocr/trocr-base-printed", [hf_package("t1", files)], "tr-ocr", "text-only-ocr")
    (tmp_path / "ckpt").mkdir()
    for name, data in files.items():
        (tmp_path / "ckpt" / name).write_bytes(data)
    rng = np.random.default_rng(7)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8), (5, 5), 2) for _ in range(3)]
    clip = _clip_of(tmp_path / "signs.mp4", frames)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "trocr",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "trocr/trocr-base-printed",
        "STREAMS": f"gate={clip}",
        "STREAM_GATE_MODE": "every",
        "STREAM_GATE_ROI": "10,10,90,50;100,60,190,110",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/trocr/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["frame_id"] for m in msgs}) >= len(frames), timeout=30)
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "ckpt"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"))
    network = transformers.VisionEncoderDecoderModel.from_pretrained(str(tmp_path / "ckpt")).eval()
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    for message in (m.json() for m in sub.messages):
        jsonschema.validate(message, SCHEMA)
        image = decoded[message["frame_id"]]
        crops = [image[10:50, 10:90, ::-1].copy(), image[60:110, 100:190, ::-1].copy()]
        import torch

        with torch.no_grad():
            tokens = network.generate(processor(images=crops, return_tensors="pt").pixel_values)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        assert [p["class"] for p in message["predictions"]] == texts and message["result"] == "\n".join(texts)
        assert [(p["x"], p["y"]) for p in message["predictions"]] == [(50.0, 30.0), (145.0, 85.0)]


@pytest.mark.slow
def test_perception_encoder_per_stream_prompts_on_mqtt(
    tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory
):
    """PE zero-shot with each stream's own prompts (as CLIP has them), embeddings without prompts;
    the cosines are checked against the network and tokenizer run here on the decoded frames."""
    import torch
    from instant_clip_tokenizer import Tokenizer

    from edge_agent.models.foundation.perception_encoder import pack_tokens, pe_preprocess
    from tests.pe_factory import model_pt, network

    net = network()
    model_server.add_core_model("perception_encoder", "PE-Core-B16-224", {"model.pt": model_pt(net)})
    rng = np.random.default_rng(9)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), (7, 7), 2) for _ in range(3)]
    clip = _clip_of(tmp_path / "street.mp4", frames)
    prompts = {"north": ["a bus", "an empty road"], "south": ["a bicycle", "a crowd", "rain"]}
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "pe",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "perception_encoder/PE-Core-B16-224",
        "STREAMS": f"north={clip};south={clip};plain={clip}",
        "STREAM_NORTH_PROMPTS": "|".join(prompts["north"]),
        "STREAM_SOUTH_PROMPTS": json.dumps(prompts["south"]),
        "SHUTDOWN_TIMEOUT": "60",
    }
    for name in ("NORTH", "SOUTH", "PLAIN"):
        env[f"STREAM_{name}_MODE"] = "every"
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/pe/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    assert sub.wait_for(lambda msgs: len(msgs) >= 3 * len(frames), timeout=30)
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    tokenizer = Tokenizer()
    with torch.no_grad():
        images = net.encode_image(torch.from_numpy(np.stack([pe_preprocess(f, 64) for f in decoded]))).numpy()
        texts = {
            k: net.encode_text(torch.from_numpy(pack_tokens([tokenizer.encode(t) for t in v], 32))).numpy()
            for k, v in prompts.items()
        }
    for message in (m.json() for m in sub.messages):
        jsonschema.validate(message, SCHEMA)
        image = images[message["frame_id"]]
        if message["stream"] == "plain":
            assert message["embeddings"][0] == pytest.approx(image.tolist(), abs=1e-4)
            continue
        cosine = texts[message["stream"]] @ image
        assert message["similarity"] == pytest.approx(cosine.tolist(), abs=1e-4)
        assert message["top"] == prompts[message["stream"]][int(np.argmax(cosine))]


@pytest.mark.slow
def test_doctr_on_a_streams_regions_on_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    """DocTR on a stream's ROI regions (rigged networks, tests/doctr_factory.py): each region is one
    word reading "A", grouped into lines in source pixels."""
    from tests.test_doctr import _serve_legacy

    _serve_legacy(model_server)
    frames = [np.full((120, 200, 3), 230, np.uint8) for _ in range(3)]
    clip = _clip_of(tmp_path / "doc.mp4", frames)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "doctr",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "doctr/default",
        "STREAMS": f"desk={clip}",
        "STREAM_DESK_MODE": "every",
        "STREAM_DESK_ROI": "10,10,90,50;110,12,190,48;10,70,190,110",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/doctr/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["frame_id"] for m in msgs}) >= len(frames), timeout=30)
    for message in (m.json() for m in sub.messages):
        jsonschema.validate(message, SCHEMA)
        assert message["result"] == "A A\nA"
        assert [(p["x"], p["y"], p["width"], p["height"]) for p in message["predictions"]] == [
            (50.0, 30.0, 80.0, 40.0),
            (150.0, 30.0, 80.0, 36.0),
            (100.0, 90.0, 180.0, 40.0),
        ]


@pytest.mark.slow
def test_easy_ocr_on_a_streams_regions_on_mqtt(tmp_path: Path, model_server, mosquitto, mqtt_subscriber_factory):
    """EasyOCR on a stream's ROI regions (rigged networks, tests/easyocr_factory.py): each region is
    read as one box of text "A", in source pixels, lines in reading order."""
    from tests.easyocr_factory import craft, recognizer, state_bytes

    model_server.add_core_model(
        "easy_ocr", "english_g2", {"craft_mlt_25k.pth": state_bytes(craft()), "weights.pt": state_bytes(recognizer())}
    )
    frames = [np.full((120, 200, 3), 180, np.uint8) for _ in range(3)]
    clip = _clip_of(tmp_path / "sign.mp4", frames)
    env = {
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(mosquitto.port),
        "AGENT_ID": "easy",
        "API_BASE_URL": model_server.base_url,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MODEL_ID": "easy_ocr/english_g2",
        "STREAMS": f"gate={clip}",
        "STREAM_GATE_MODE": "every",
        "STREAM_GATE_ROI": "10,10,90,50;110,10,190,50;10,70,190,110",
        "SHUTDOWN_TIMEOUT": "60",
    }
    sub = mqtt_subscriber_factory(mosquitto, ["edge-agent/easy/+/predictions"], qos=1)
    with AgentProcess(env, tmp_path) as agent:
        rc = agent.wait(timeout=240)
        assert rc == 0, agent.stderr[-4000:]
    assert sub.wait_for(lambda msgs: len({m.json()["frame_id"] for m in msgs}) >= len(frames), timeout=30)
    for message in (m.json() for m in sub.messages):
        jsonschema.validate(message, SCHEMA)
        assert message["result"] == "A A\nA"
        assert [(p["x"], p["y"], p["width"], p["height"]) for p in message["predictions"]] == [
            (50.0, 30.0, 80.0, 40.0),
            (150.0, 30.0, 80.0, 40.0),
            (100.0, 90.0, 180.0, 40.0),
        ]
