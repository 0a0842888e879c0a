"""How many batches of one model run at once, and how many intra-op threads each run gets.

ONNX Runtime splits one run over its intra-op threads, but a batch-1 YOLO graph does not
parallelise well: on the 2-core CI box one thread reaches only 0.58-0.76x the rate of two, so
two threads on one run leave about a third of the CPU spinning between operators. Two runs in
flight, one thread each, keep both cores on useful work: two single-threaded session.run loops
reached 1.10-1.44x one two-threaded loop there, and the whole agent path (decode, colour,
letterbox, model, decode of the output) 1.02-1.07x a bare two-threaded loop, against 0.88-0.89x
with one run in flight (``python -m bench.agent_bench throughput``; figures in the README). Two
callers sharing one two-threaded pool are worse than either (0.82x), so runs in flight and threads
per run are chosen together, here.

The automatic choice stays at one run in flight on OpenVINO (its own thread pool already spreads
one run: two runs measured 0.98-1.01x) and on accelerators (CUDA, TensorRT: not measured here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CPU_PROVIDER = "CPUExecutionProvider"
#: runs in flight the automatic choice gives the CPU provider on a box with 2+ cores
AUTO_CPU_IN_FLIGHT = 2


@dataclass(frozen=True)
class RunPlan:
    """``in_flight`` batches of one model at once, each run on ``intra_op_threads`` threads
    (0: onnxruntime's own default of one per core)."""

    in_flight: int
    intra_op_threads: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (a container's or systemd's CPU affinity included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_runs(requested: int, intra_op_threads: int, providers: list[str], cores: int) -> RunPlan:
    """The run plan of one model.

    ``requested`` is MODEL_CONCURRENCY (0 = automatic), ``intra_op_threads`` ORT_INTRA_OP_THREADS
    (0 = automatic), ``providers`` the execution providers the session will have, best first.
    A user's explicit thread count is never changed.
    """
    cpu_only = list(providers) == [CPU_PROVIDER]
    if requested > 0:
        in_flight, why = requested, f"MODEL_CONCURRENCY={requested}"
    elif cpu_only and cores >= 2:
        in_flight = AUTO_CPU_IN_FLIGHT
        why = f"auto: {in_flight} runs in flight on the CPU provider ({cores} cores)"
    else:
        in_flight = 1
        why = "auto: one run in flight" + ("" if cpu_only else f" on {providers[0] if providers else 'no provider'}")
    threads = intra_op_threads
    if threads == 0 and in_flight > 1 and cpu_only:
        threads = max(1, cores // in_flight)
        why += f", {threads} intra-op thread(s) each"
    return RunPlan(in_flight=in_flight, intra_op_threads=threads, reason=why)
