"""The live page in a real headless Chromium: loads clean, one live picture per stream, boxes visible.

A real agent process (counter-stamped clips, so every frame differs; a constant ONNX detector
with known boxes, one class coloured by the model and one not), HTTP_TOKEN set so the browser
goes through the ``?token=`` -> cookie path, and a camera that is down to show its empty card.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.agent_process import AgentProcess
from tests.fixtures.chromium import CdpPage, Chromium
from tests.fixtures.mosquitto import free_port
from tests.live_agent import GADGET_BGR, WIDGET_BGR, known_objects_model, wait_for_picture

TOKEN = "browser-test-token-91b2c3d4e5f6"
LIVE = ("objects", "second")

# JS: a checksum of each picture's pixels (drawn into a canvas: what the user sees, not the URL).
PICTURE_SUMS = """
(() => {
  const out = {};
  for (const img of document.querySelectorAll("img.picture")) {
    if (!img.naturalWidth) { out[img.dataset.stream] = null; continue; }
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 7) sum = (sum * 31 + data[i]) % 2147483647;
    out[img.dataset.stream] = sum;
  }
  return out;
})()
"""

PICTURE_BOX = """
(() => {
  const img = document.querySelector('img.picture[data-stream="objects"]');
  img.scrollIntoView({block: "center"});
  const r = img.getBoundingClientRect();
  return {left: r.left, top: r.top, width: r.width, height: r.height, nw: img.naturalWidth, nh: img.naturalHeight};
})()
"""


def _colour_mask(image: np.ndarray, bgr: tuple[int, int, int], tolerance: int = 70) -> np.ndarray:
    return np.abs(image.astype(np.int32) - np.array(bgr)).sum(axis=2) < tolerance


def _screen_rect(box: dict[str, float], shown: dict[str, float]) -> tuple[int, int, int, int]:
    """A prediction (centre x, y, width, height in source pixels) -> screenshot pixels of the <img>
    shown with object-fit: contain."""
    scale = min(shown["width"] / shown["nw"], shown["height"] / shown["nh"])
    left = shown["left"] + (shown["width"] - shown["nw"] * scale) / 2
    top = shown["top"] + (shown["height"] - shown["nh"] * scale) / 2
    x1 = left + (box["x"] - box["width"] / 2) * scale
    y1 = top + (box["y"] - box["height"] / 2) * scale
    return round(x1), round(y1), round(x1 + box["width"] * scale), round(y1 + box["height"] * scale)


def _border(mask: np.ndarray, rect: tuple[int, int, int, int], pad: int = 3) -> tuple[int, int]:
    """(pixels of ``mask`` on the box outline band, pixels in that band)."""
    x1, y1, x2, y2 = rect
    band = np.zeros_like(mask)
    band[y1 - pad : y2 + pad, x1 - pad : x2 + pad] = True
    band[y1 + pad : y2 - pad, x1 + pad : x2 - pad] = False
    return int((mask & band).sum()), int(band.sum())


async def _check_page(page: CdpPage, base: str, boxes: dict[str, dict[str, float]], shot_path: Path) -> dict[str, Any]:
    await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
    await page.navigate(f"{base}/?token={TOKEN}")  # -> 303 to ./ with the cookie
    assert await page.evaluate("location.search") == "", "the token stayed in the address bar"

    await page.wait_for(
        "document.querySelectorAll('img.picture').length === 3", 20, "one picture element per configured stream"
    )
    names = await page.evaluate("[...document.querySelectorAll('img.picture')].map(i => i.dataset.stream)")
    assert sorted(names) == ["dead", "objects", "second"]
    await page.wait_for(
        "[...document.querySelectorAll('img.picture')].filter(i => !i.hidden && i.naturalWidth > 0).length === 2",
        30,
        "both live pictures shown",
    )
    dead_card = await page.evaluate("document.querySelector('[data-stream=\"dead\"].card').innerText")
    assert "no picture yet" in dead_card and "last error" in dead_card, dead_card
    hidden = await page.evaluate(
        "getComputedStyle(document.querySelector('img.picture[data-stream=\"dead\"]')).display"
    )
    assert hidden == "none", "the camera that is down shows a broken picture"

    # Each picture changes over time (the clips differ from frame to frame).
    # (Sampled a few times: the clips loop, so one fixed delay could land on the same frame.)
    first = await page.evaluate(PICTURE_SUMS)
    changed: set[str] = set()
    for _ in range(6):
        await asyncio.sleep(0.7)
        later = await page.evaluate(PICTURE_SUMS)
        changed |= {name for name in LIVE if later[name] is not None and later[name] != first[name]}
        assert later["dead"] is None
    for name in LIVE:
        assert first[name] is not None and name in changed, f"{name}: picture did not change"

    # A screenshot shows the boxes in the model's colours.
    shown = await page.evaluate(PICTURE_BOX)
    await asyncio.sleep(0.3)  # let the scroll settle before the shot
    shown = await page.evaluate(PICTURE_BOX)
    png = await page.screenshot()
    await asyncio.to_thread(shot_path.write_bytes, png)  # kept with the test files for a look after a failure
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    widget = _screen_rect(boxes["widget"], shown)
    gadget = _screen_rect(boxes["gadget"], shown)
    magenta = _colour_mask(shot, WIDGET_BGR)
    on_border, band = _border(magenta, widget)
    assert on_border > 0.3 * band / 3, f"widget box outline not in the model colour: {on_border} of {band}"
    x1, y1, x2, y2 = widget
    assert magenta[y1 + 6 : y2 - 6, x1 + 6 : x2 - 6].mean() < 0.02, "the box inside is painted over"
    # Within this picture (the other stream runs the same model), magenta only at the box and its tab.
    elsewhere = np.zeros_like(magenta)
    left, top = round(shown["left"]), round(shown["top"])
    elsewhere[top : top + round(shown["height"]), left : left + round(shown["width"])] = True
    elsewhere &= magenta
    elsewhere[y1 - 40 : y2 + 6, x1 - 6 : x2 + 120] = False  # the box and its label tab above it
    assert elsewhere.sum() < 30, f"{elsewhere.sum()} magenta pixels away from the widget box"
    palette = _colour_mask(shot, GADGET_BGR)
    on_border, band = _border(palette, gadget)
    assert on_border > 0.3 * band / 3, f"gadget box not in the default palette's colour: {on_border} of {band}"

    # Readable on a phone: one column, no sideways scrolling, text not shrunk.
    await page.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=3, mobile=True)
    await page.navigate(f"{base}/")  # the cookie carries the token now
    await page.wait_for("document.querySelectorAll('.card').length === 3", 20, "cards on the phone")
    layout = await page.evaluate(
        "({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " lefts: [...document.querySelectorAll('.card')].map(c => Math.round(c.getBoundingClientRect().left)),"
        " font: parseFloat(getComputedStyle(document.querySelector('dd')).fontSize)})"
    )
    assert layout["scroll"] <= layout["inner"], layout
    assert len(set(layout["lefts"])) == 1, f"cards not in one column: {layout}"
    assert layout["font"] >= 14, layout
    return {"widget": widget, "gadget": gadget}


def test_live_page_in_headless_chromium(tmp_path: Path, clip_factory, chromium: Chromium) -> None:  # type: ignore[no-untyped-def]
    objects_clip = clip_factory(3.0, 30, (320, 240))
    second_clip = clip_factory(2.0, 25, (480, 270))
    model_dir = known_objects_model(tmp_path / "model")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "STREAMS": f"objects={objects_clip};second={second_clip};dead=rtsp://127.0.0.1:9/none",
        "STREAM_OBJECTS_LOOP": "true",
        "STREAM_SECOND_LOOP": "true",
        "MODEL_ID": str(model_dir),
        "HEALTH_PORT": str(port),
        "HTTP_TOKEN": TOKEN,
        "STDOUT_SINK": "true",
        "LIVE_VIEW_MAX_FPS": "8",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    with AgentProcess(env, tmp_path) as agent:
        wait_for_picture(base, "objects", {"Authorization": f"Bearer {TOKEN}"})
        message = next(m for m in reversed(agent.predictions()) if m["stream"] == "objects")
        boxes = {p["class"]: p for p in message["predictions"]}
        assert set(boxes) == {"widget", "gadget"}

        async def drive() -> None:
            async with chromium.page() as page:
                try:
                    await _check_page(page, base, boxes, tmp_path / "screenshot.png")
                finally:
                    if page.console_errors:
                        raise AssertionError("console errors:\n" + "\n".join(page.console_errors))

        asyncio.run(drive())
        assert agent.terminate(30) == 0, agent.stderr()
