"""The supervisor in process, on real files and real models: one record per stream, and a model's
stage, executor and loaded model retired with its last stream (issue 11)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import pytest

from edge_agent.agent.errors import StreamExistsError, UnknownStreamError
from edge_agent.agent.settings import load_config
from edge_agent.agent.supervisor import Supervisor
from edge_agent.models.common.settings import set_model_settings
from edge_agent.pipelines.stream_config import StreamConfig
from tests.agent_cli import AGENT_PREFIXES
from tests.fixtures.media import make_clip

BUILTIN = Path(__file__).resolve().parent.parent / "models" / "builtin" / "shapes-v1"

pytestmark = pytest.mark.timeout(120)


def _infer_threads(model_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"infer-{model_id}"[:40])]


async def _until(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_streams_churning_through_add_and_remove_leave_no_model_behind(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    for key in list(os.environ):
        if key.upper().startswith(AGENT_PREFIXES):
            monkeypatch.delenv(key)
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=30, size=(320, 240))
    second = tmp_path / "second-model"
    shutil.copytree(BUILTIN, second)
    monkeypatch.setenv("STREAMS", f"first={clip}")
    monkeypatch.setenv("STREAM_FIRST_LOOP", "true")
    monkeypatch.setenv("STREAM_FIRST_MAX_FPS", "10")
    monkeypatch.setenv("STDOUT_SINK", "false")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config()
    set_model_settings(config.models)

    async def scenario() -> int:
        supervisor = Supervisor(config)
        run = asyncio.create_task(supervisor.run())
        await _until(lambda: "first" in supervisor.streams and supervisor.streams["first"].runner.state == "streaming")
        default = config.agent.model_id
        for round_ in range(3):  # churn: the second model comes and goes with its streams
            for name in ("b1", "b2"):
                await supervisor.add_stream(StreamConfig(name=name, url=str(clip), model_id=str(second), loop=True))
            with pytest.raises(StreamExistsError):
                await supervisor.add_stream(StreamConfig(name="B1", url=str(clip)))
            record = supervisor.models[str(second)]
            assert record.streams == {"b1", "b2"}
            await _until(lambda r=record: r.stage.frames > 0)
            assert 1 <= len(_infer_threads(str(second))) <= record.stage.concurrency
            await supervisor.remove_stream("b1")
            assert str(second) in supervisor.models  # b2 still uses it
            await supervisor.remove_stream("b2")
            assert str(second) not in supervisor.models, f"round {round_}: the model stayed"
            assert record.task.done() and record.executor._shutdown  # type: ignore[attr-defined]
            assert str(second) not in supervisor.manager.model_ids()
            await _until(lambda: not _infer_threads(str(second)), timeout=10)
            assert set(supervisor.streams) == {"first"} and set(supervisor.models) == {default}
        with pytest.raises(UnknownStreamError):
            await supervisor.remove_stream("b1")
        assert supervisor.stats()["models"][default]["streams"] == ["first"]
        supervisor.request_stop()
        return await asyncio.wait_for(run, 30)

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        set_model_settings(None)
