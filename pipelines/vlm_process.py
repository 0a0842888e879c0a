"""A vision-language model answering in a child process of its own, at the lowest CPU priority.

Why a process: a worker *thread* at nice 19 / SCHED_IDLE still shares the agent's GIL. Whenever the
scheduler preempts it while it holds the GIL (it runs Python between torch operators), every thread
of the detector that needs the GIL waits until the starved thread gets a CPU again: the detector
then pays for the VLM it was meant to outrank (a priority inversion, worst on a busy box). A child
process has its own interpreter, so lowering its priority can only slow the VLM.

The child is a fresh interpreter (no fork of a threaded asyncio process) whose first statements,
before any import that could start a thread (numpy's BLAS pool, torch's OpenMP team), lower its
priority, so every thread it ever has inherits it. It then loads the model with ``get_model`` (the
same environment, so the same settings and cache) and answers ``(image, prompt)`` requests one at
a time over a socket pair (``multiprocessing.connection``) with the answer's Roboflow response. The
model id and API key travel over that socket, never on the command line. Loading statuses come
back to the parent; a failure to load comes back as its error, message and whether it is permanent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from edge_agent.models.common.errors import ModelError, ModelRuntimeError

log = logging.getLogger("edge_agent.vlm")


class VLMProcessError(ModelError):
    """The VLM's process could not load its model (``permanent`` as the child's error was)."""

    def __init__(self, model_id: str, message: str, permanent: bool) -> None:
        self.model_id = model_id
        self.permanent = permanent
        super().__init__(message)


@dataclass(frozen=True)
class RemoteAnswer:
    """An answer made in the VLM's process: its Roboflow response and how many tokens it wrote."""

    response: dict[str, Any]
    new_tokens: int = 0

    def to_response(self) -> dict[str, Any]:
        return dict(self.response)


# Run by the child interpreter before anything else is imported: it lowers its own priority (the
# only thread so far, so every later thread inherits it), then serves. Kept to the standard library.
_BOOT = """
import os, sys
nice = int(sys.argv[1])
try:
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    if nice >= 19 and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except OSError:
    pass
from edge_agent.pipelines.vlm_process import serve
serve(int(sys.argv[2]))
"""


def serve(fd: int) -> None:
    """The child process: read its orders, load, then answer requests until the socket closes."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        model_id, api_key, threads, cpu_share = conn.recv()
    except (EOFError, OSError):
        return
    try:
        import torch

        torch.set_num_threads(threads)
        from edge_agent.models import get_model

        model = get_model(model_id, api_key, status=lambda text: conn.send(("status", text)))
        engine = getattr(model, "engine", None)
        if engine is not None and hasattr(engine, "cpu_share"):
            engine.cpu_share = cpu_share
        info = {
            "stream_options": tuple(getattr(model, "stream_options", ())),
            "task_type": getattr(model, "task_type", None),
            "providers": list(getattr(model, "providers", [])),
        }
        conn.send(("ready", info))
    except BaseException as exc:  # everything goes back to the parent, which decides
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}", bool(getattr(exc, "permanent", True))))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return  # the parent closed the socket (or is gone)
        if request is None:
            return
        image, prompt = request
        try:
            (answer,) = model.predict([image], prompt=prompt)
            reply: tuple[Any, ...] = ("answer", answer.to_response(), int(getattr(answer, "new_tokens", 0)))
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            return


class VLMProcess:
    """The parent's handle: ``start`` (blocking: the child loads), ``predict``, ``cancel``, ``close``.

    Stands in for the model in :class:`~edge_agent.pipelines.vlm_answers.VLMAsker` (``remote``)."""

    remote = True

    def __init__(self, model_id: str, api_key: str | None, *, nice: int, threads: int, cpu_share: float) -> None:
        self.model_id = model_id
        self._orders = (model_id, api_key, threads, cpu_share)
        self._nice = nice
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.stream_options: tuple[str, ...] = ()
        self.task_type: str | None = None
        self.providers: list[str] = []

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, status: Callable[[str], None] | None = None) -> None:
        """Start the child and wait until its model is loaded (VLMProcessError when it cannot be)."""
        ours, theirs = socket.socketpair()
        try:
            out: Any = sys.stderr.fileno()  # the agent's stdout carries JSON lines: the child writes none there
        except (AttributeError, OSError, ValueError):
            out = subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(self._nice), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        conn = self._conn
        try:
            conn.send(self._orders)
            while True:
                message = conn.recv()
                if message[0] == "status":
                    if status is not None:
                        status(message[1])
                elif message[0] == "ready":
                    info = message[1]
                    self.stream_options = tuple(info["stream_options"])
                    self.task_type = info["task_type"]
                    self.providers = list(info["providers"])
                    return
                else:  # "failed"
                    self.close()
                    raise VLMProcessError(self.model_id, message[1], message[2])
        except (EOFError, OSError):
            code = self._process.wait(5) if self._process is not None else None
            raise VLMProcessError(
                self.model_id, f"the vision-language model's process ended while loading (exit code {code})", False
            ) from None

    def predict(self, images: list[np.ndarray], prompt: str | None = None) -> list[RemoteAnswer]:
        (image,) = images
        with self._lock:
            if self._conn is None:
                raise ModelRuntimeError(f"{self.model_id}: the vision-language model's process is not running")
            try:
                self._conn.send((np.ascontiguousarray(image), prompt))
                message = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise ModelRuntimeError(f"{self.model_id}: the vision-language model's process is gone") from exc
        if message[0] == "answer":
            return [RemoteAnswer(message[1], message[2])]
        raise ModelRuntimeError(f"{self.model_id}: {message[1]}")

    def cancel(self) -> None:
        """End the answer in flight: the child is stopped (a ``predict`` waiting on it fails at once)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def close(self, timeout: float = 2.0) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
