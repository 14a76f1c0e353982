"""``train()``: one training run of a store, end to end, as a job that survives real life.

Order: lock the store (one trainer at a time) and prepare the run folder (:mod:`.runstate`), then the
named steps of :mod:`.steps`: the config (or the checkpoint's, on resume) -> the device -> which cases and
which base model -> the student (checkpoint, else the active version, else a new ``config.arch``) -> the
method parts and the :class:`~semisam.training.trainer.Trainer`, its loop with checkpoints -> validation
Dice on the store's validation split -> save and register the model -> the promotion rule
(:mod:`.promote`) -> ``done``. Any failure ends with one ``error`` event (with a
``kind``) and the registry as it was; SIGTERM (the caller's ``cancel``) checkpoints and ends with
``cancelled``; nothing is registered or promoted then.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semisam.training.config import TrainConfig
from semisam.training.errors import Cancelled, TrainError
from semisam.training.events import EventSink

log = logging.getLogger(__name__)

#: Exit codes of ``semisam train``.
EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        status: ``"done"``, ``"cancelled"`` or ``"error"``; ``exit_code`` 0, 3 or 1 accordingly.
        version: the registered version (``v0003``) or ``None``.
        model_dir: its folder in the registry.
        validation: ``{"dice", "per_case", "cases"}`` of the new version.
        promoted, promotion: whether it became active and why (not).
        seconds: wall-clock seconds of the whole run; ``iterations``: iterations trained in total.
        error_kind, message: for ``error``; ``checkpoint``: resume point for ``cancelled``.
        losses: the loss curve ``[{"iteration": i, term: value}]``.
    """

    status: str
    exit_code: int
    version: str | None = None
    model_dir: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)
    promoted: bool = False
    promotion: str = ""
    seconds: float = 0.0
    iterations: int = 0
    error_kind: str | None = None
    message: str = ""
    checkpoint: str | None = None
    losses: list[dict[str, float]] = field(default_factory=list)


def training_dir(store_root: str | Path) -> Path:
    """``STORE/training/`` (run folder, lock)."""
    return Path(store_root) / "training"


def cache_dir(store_root: str | Path) -> Path:
    """``STORE/cache/``: generalist embeddings and pseudo-labels (deletable at any time)."""
    return Path(store_root) / "cache"


def train(
    store_root: str | Path,
    config: TrainConfig | None = None,
    events: Callable[[dict[str, Any]], None] | None = None,
    *,
    events_file: str | Path | None = None,
    streams: list | None = None,
    work_dir: str | Path | None = None,
    resume: bool = False,
    promote: bool = True,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train the store's specialist (see the module docstring); never raises for a failed run.

    Args:
        store_root: the store folder.
        config: the run's settings (default :class:`TrainConfig`); on ``resume`` the checkpoint's.
        events: callback receiving every event dict.
        events_file: extra JSON-lines file of the events (``--events``).
        streams: text streams that get the JSON lines (the CLI passes ``sys.stdout``).
        work_dir: run folder (default ``STORE/training/run``).
        resume: continue the run in ``work_dir`` from its last checkpoint (a fresh start if none).
        promote: apply the promotion rule (``False``: register only).
        cancel: set it to cancel (the CLI sets it on SIGTERM).
    """
    from semisam.training import ddp

    dist = ddp.from_env()
    store_root = Path(store_root)
    run_dir = Path(work_dir) if work_dir else training_dir(store_root) / "run"
    t_start = time.monotonic()
    sink = EventSink(callback=events, streams=streams, files=[], enabled=dist.is_main)
    lock = None
    try:
        if events_file:
            try:
                sink.add_file(events_file)
            except OSError as exc:
                raise TrainError(
                    "bad_config", f"--events {events_file}: cannot write ({exc.strerror or exc})"
                ) from None
        if dist.is_main:
            lock, run_dir = _open_run(store_root, run_dir, resume, sink)
        return _run(
            store_root, config or TrainConfig(), sink, dist, run_dir, resume, promote, cancel, t_start
        )
    except Cancelled as exc:
        sink({"event": "cancelled", "iteration": exc.iteration, "checkpoint": exc.checkpoint})
        return TrainResult(
            "cancelled",
            EXIT_CANCELLED,
            iterations=exc.iteration,
            checkpoint=exc.checkpoint,
            seconds=time.monotonic() - t_start,
        )
    except TrainError as exc:
        sink({"event": "error", "kind": exc.kind, "message": str(exc)})
        return TrainResult(
            "error", EXIT_ERROR, error_kind=exc.kind, message=str(exc), seconds=time.monotonic() - t_start
        )
    except Exception as exc:  # noqa: BLE001 - every failure must end with one error event
        kind, msg = _classify(exc, run_dir)
        if kind == "internal":
            log.error("training failed:\n%s", traceback.format_exc())
        sink({"event": "error", "kind": kind, "message": msg})
        return TrainResult(
            "error", EXIT_ERROR, error_kind=kind, message=msg, seconds=time.monotonic() - t_start
        )
    finally:
        if lock is not None:
            lock.release()
        sink.close()
        ddp.shutdown(dist)


def _open_run(store_root: Path, run_dir: Path, resume: bool, sink: EventSink):
    """``(lock, run folder)``: the store's trainer lock taken (before the run folder is touched: it may
    belong to a running trainer), the run folder checked and prepared, its events file opened."""
    from semisam.training import runstate
    from semisam.training.lock import LOCK_NAME, TrainLock

    if not (store_root / "semisam_store.json").is_file():
        raise TrainError("bad_config", f"{store_root}: not a SemiSAM store (no semisam_store.json)")
    lock = TrainLock(training_dir(store_root) / LOCK_NAME)
    lock.acquire()
    try:
        run_dir = runstate.prepare(run_dir, store_root, fresh=not resume)
        sink.add_file(run_dir / runstate.EVENTS)
    except BaseException:
        lock.release()
        raise
    return lock, run_dir


def _classify(exc: BaseException, run_dir: Path | None = None) -> tuple[str, str]:
    import torch

    from semisam.training.runstate import disk_full

    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc):
        return "cuda_oom", (
            f"CUDA ran out of memory ({line}); lower --batch-size or the crop size, or use --device cpu"
        )
    if disk_full(exc, run_dir or Path.cwd()):
        where = f" holding {run_dir}" if run_dir is not None else ""
        return "disk_full", (
            f"no space left on the disk{where} ({line}); free some space, then run again with --resume "
            "(the last checkpoint and the registry are intact)"
        )
    from semisam.model_folder import CheckpointError
    from semisam.store.errors import StoreError

    if isinstance(exc, StoreError | CheckpointError | FileNotFoundError):
        return "bad_config", line
    return "internal", f"{type(exc).__name__}: {line}"


def _run(store_root, config, sink, dist, run_dir, resume, promote, cancel, t_start) -> TrainResult:
    """The run's named steps (:mod:`semisam.training.steps`), in order."""
    from semisam.store import LabeledStore
    from semisam.training import steps

    emit = sink
    config, ckpt = steps.settle_config(run_dir, config, resume)
    device, dist = steps.pick_device(config, dist)
    store = LabeledStore(store_root)
    emit({"event": "phase", "phase": "loading"})
    plan = steps.plan_cases(store, config, ckpt)
    student = steps.build_student(plan, store, device)
    trainer, start = steps.build_trainer(
        plan, store, student, device, dist, run_dir, cache_dir(store_root), emit, cancel
    )
    steps.run_training(plan, trainer, start, store, device, dist, run_dir, emit, cancel)
    result = TrainResult("done", EXIT_DONE, iterations=plan.config.iterations, losses=trainer.loss_curve)
    if not dist.is_main:
        return result  # the final checkpoint's barrier was the last collective; rank 0 saves alone
    validation = steps.validate_final(plan, student, store, device, run_dir, emit, cancel)
    version = steps.save_and_register(plan, trainer, student, validation, store, device, dist, run_dir, emit)
    promoted, why = steps.promote_version(plan, version, validation, store, device, promote)
    model_path = store.models.get(version).path
    steps.finish(run_dir)
    emit(
        {
            "event": "done",
            "version": version,
            "model_dir": str(model_path),
            "validation": validation,
            "promoted": promoted,
            "promotion": why,
            "seconds": round(time.monotonic() - t_start, 2),
            "iterations": plan.config.iterations,
        }
    )
    result.version, result.model_dir, result.validation = version, str(model_path), validation
    result.promoted, result.promotion, result.seconds = promoted, why, time.monotonic() - t_start
    return result
