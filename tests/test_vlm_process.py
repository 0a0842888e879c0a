"""The VLM in a child process of its own (VLM_PROCESS, the agent's default): the child and every
thread it starts (torch's intra-op team included) run at the lowered priority, read from the
kernel's /proc stat lines, while this process keeps its own; answers come back over the pipe; a
model that cannot load is reported with its error; cancel stops the child. Not timed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

MODEL_ID = "moondream2/moondream2_2b_jul24"
SCHED_IDLE = getattr(os, "SCHED_IDLE", 5)


def _priorities(pid: int) -> dict[int, tuple[int, int]]:
    """(nice, policy) of every thread of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[16]), int(fields[38]))
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.moondream_factory import Force, moondream_checkpoint

    return moondream_checkpoint(
        tmp_path_factory.mktemp("md") / "boxes", force=Force(token=7, coord_bin=512, size_bins=(1023, 1023))
    )


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities are read from Linux /proc")
def test_the_vlm_process_and_all_its_threads_run_at_the_lowered_priority(model_server, model_env, checkpoint):
    from edge_agent.pipelines.vlm_answers import thread_priority
    from edge_agent.pipelines.vlm_process import VLMProcess
    from tests.vlm_factory import files_of

    model_server.add_core_model("moondream2", "moondream2_2b_jul24", files_of(checkpoint))
    model_env.set(API_BASE_URL=model_server.base_url, LMM_ENABLED="true")
    ours = thread_priority()
    process = VLMProcess(MODEL_ID, None, nice=19, threads=2, cpu_share=1.0)
    statuses: list[str] = []
    try:
        process.start(statuses.append)
        assert process.stream_options == ("prompt",) and process.task_type == "object-detection"
        assert any("loading" in s for s in statuses), statuses
        (answer,) = process.predict([np.zeros((100, 200, 3), np.uint8)], prompt="person")
        response = answer.to_response()
        # centre bin 512 -> 0.5, size bins 1023 -> the whole picture: 2 objects at most, as asked below
        assert response["image"] == {"width": 200, "height": 100}
        assert response["predictions"][0]["width"] == pytest.approx(200.0)
        assert {r["class"] for r in response["predictions"]} == {"person"}
        assert process.pid is not None
        threads = _priorities(process.pid)
        # the child's main thread, torch's intra-op team (VLM_THREADS=2) and Python's helpers
        assert len(threads) >= 2, threads
        assert set(threads.values()) == {(19, SCHED_IDLE)}, threads
        assert thread_priority() == ours  # this process is untouched
        process.cancel()
        with pytest.raises(Exception, match="process is gone"):
            process.predict([np.zeros((10, 10, 3), np.uint8)], prompt="person")
    finally:
        process.close()


def test_a_model_that_cannot_load_is_reported_with_its_error(model_env):
    from edge_agent.pipelines.vlm_process import VLMProcess, VLMProcessError

    model_env.set(LMM_ENABLED="true", MOONDREAM2_ENABLED="false")
    process = VLMProcess(MODEL_ID, None, nice=10, threads=1, cpu_share=1.0)
    try:
        with pytest.raises(VLMProcessError, match="MOONDREAM2_ENABLED") as caught:
            process.start()
        assert caught.value.permanent  # a disabled family: no restart helps
    finally:
        process.close()
