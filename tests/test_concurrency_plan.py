"""The run plan of a model: batches in flight and intra-op threads per run (models/speed/concurrency.py)."""

from __future__ import annotations

import pytest

from edge_agent.models.speed.concurrency import plan_runs

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
OPENVINO = ["OpenVINOExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("cores", "in_flight", "threads"),
    [(1, 1, 0), (2, 2, 1), (3, 2, 1), (8, 2, 4), (16, 2, 8)],
)
def test_auto_on_the_cpu_provider_splits_the_cores_between_two_runs(cores: int, in_flight: int, threads: int) -> None:
    plan = plan_runs(0, 0, CPU, cores)
    assert (plan.in_flight, plan.intra_op_threads) == (in_flight, threads)
    assert plan.reason.startswith("auto")


@pytest.mark.parametrize("providers", [CUDA, OPENVINO, ["TensorrtExecutionProvider", *CUDA]])
def test_auto_elsewhere_is_one_run_with_the_runtime_default_threads(providers: list[str]) -> None:
    plan = plan_runs(0, 0, providers, 8)
    assert (plan.in_flight, plan.intra_op_threads) == (1, 0)
    assert providers[0] in plan.reason


def test_an_explicit_concurrency_is_kept_and_sizes_the_threads_on_cpu() -> None:
    assert (plan_runs(1, 0, CPU, 8).in_flight, plan_runs(1, 0, CPU, 8).intra_op_threads) == (1, 0)
    plan = plan_runs(3, 0, CPU, 8)
    assert (plan.in_flight, plan.intra_op_threads) == (3, 2)
    assert "MODEL_CONCURRENCY=3" in plan.reason
    plan = plan_runs(2, 0, CUDA, 8)  # on a GPU the device does the work: threads stay the runtime's
    assert (plan.in_flight, plan.intra_op_threads) == (2, 0)


def test_a_users_thread_count_is_never_changed() -> None:
    assert plan_runs(0, 2, CPU, 8).intra_op_threads == 2
    assert plan_runs(4, 1, CPU, 2).intra_op_threads == 1


def test_batch_size_follows_the_run_plan() -> None:
    from edge_agent.agent.supervisor import CPU_BATCH_SIZE, batch_size_for

    assert batch_size_for(CPU, 2, 16, explicit=False) == 1  # two single-threaded runs: one frame each
    assert batch_size_for(CPU, 1, 16, explicit=False) == CPU_BATCH_SIZE
    assert batch_size_for(CPU, 1, 2, explicit=False) == 2
    assert batch_size_for(CUDA, 1, 16, explicit=False) == 16
    assert batch_size_for(CPU, 2, 8, explicit=True) == 8  # MAX_BATCH_SIZE set by the user wins
