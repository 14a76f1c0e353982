"""Long computations off Slicer's GUI thread: a :class:`Worker` thread the Widget polls with a timer.

The pattern (Slicer's MRML and Qt are not thread-safe, torch and ONNX Runtime release the GIL while they
compute): the Logic reads what the computation needs from the scene on the main thread, the worker thread
computes on numpy arrays only, and the main thread writes the result to the scene after :meth:`Worker.poll`
says it is done. The computation's progress callback is :meth:`Worker.report`, which records the progress
for the Widget and raises :class:`Cancelled` once :meth:`Worker.cancel` was called: the core reports once
per propagated slice or inference chunk (about a second on a laptop CPU), so Cancel takes effect within
about that long, and a cancelled computation writes nothing. No qt, no ``slicer.app``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a computation by its progress callback once the user pressed Cancel."""


class WorkerState(enum.Enum):
    running = "running"
    done = "done"  # finished with a result
    failed = "failed"  # raised an exception (``error``)
    cancelled = "cancelled"  # stopped by Cancel; nothing was written


@dataclass
class WorkerStatus:
    """What :meth:`Worker.poll` returns.

    Attributes:
        state: see :class:`WorkerState`.
        fraction: progress in [0, 1] as last reported.
        stage: the computation's last stage text (e.g. ``"propagating: slice 12"``).
        seconds: wall-clock seconds since the worker started.
    """

    state: WorkerState
    fraction: float
    stage: str
    seconds: float

    @property
    def finished(self) -> bool:
        return self.state is not WorkerState.running


class Worker:
    """Run ``work(report)`` on a daemon thread; ``report(fraction, stage)`` is its progress callback.

    Args:
        title: what the work is (for messages and the thread name), e.g. ``"Propagate"``.
        work: the computation; it must not touch MRML or Qt (it runs off the main thread).
    """

    def __init__(self, title: str, work: Callable[[Callable[[float, str], None]], Any]) -> None:
        self.title = title
        self._work = work
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._fraction, self._stage = 0.0, "starting"
        self.result: Any = None
        self.error: BaseException | None = None
        self._state = WorkerState.running
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name=f"semisam-{title.lower()}", daemon=True)

    def start(self) -> Worker:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def report(self, fraction: float, stage: str) -> None:
        """Progress callback for the computation: records progress; raises :class:`Cancelled` after Cancel."""
        with self._lock:
            self._fraction, self._stage = max(0.0, min(1.0, float(fraction))), str(stage)
        if self._cancel.is_set():
            raise Cancelled(self.title)

    def cancel(self) -> None:
        """Ask the computation to stop at its next progress report."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def _run(self) -> None:
        try:
            result = self._work(self.report)
        except Cancelled:
            state = WorkerState.cancelled
        except BaseException as exc:  # handed to the main thread, which shows it
            log.debug("%s failed in its worker thread", self.title, exc_info=True)
            self.error, state = exc, WorkerState.failed
        else:
            self.result, state = result, WorkerState.done
        with self._lock:
            self._state = state

    def poll(self) -> WorkerStatus:
        """The current state and progress (cheap: the Widget calls it every ~100 ms)."""
        with self._lock:
            return WorkerStatus(self._state, self._fraction, self._stage, time.perf_counter() - self._started)

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> WorkerStatus:
        """Block until the worker ends (tests, scripts); returns :meth:`poll`."""
        self._thread.join(timeout)
        return self.poll()
