"""``train()``: one training run of a store, end to end, as a job that survives real life.

Order: lock the store (one trainer at a time) -> read the config (or the checkpoint's, on resume) ->
load cases on the model grid -> build the student (checkpoint, else the active version, else a new
``config.arch``) and the method parts -> :class:`~semisam.training.trainer.Trainer` loop with
checkpoints -> validation Dice on the store's validation split -> save a model folder -> register it
-> the promotion rule (:mod:`.promote`) -> ``done``. Any failure ends with one ``error`` event (with a
``kind``) and the registry as it was; SIGTERM (the caller's ``cancel``) checkpoints and ends with
``cancelled``; nothing is registered or promoted then.
"""

from __future__ import annotations

import dataclasses
import json
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
#: Written into the run folder once the new version is registered (``runstate.REGISTERED``).
REGISTERED = "registered.json"


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
            from semisam.training import runstate
            from semisam.training.lock import LOCK_NAME, TrainLock

            if not (store_root / "semisam_store.json").is_file():
                raise TrainError("bad_config", f"{store_root}: not a SemiSAM store (no semisam_store.json)")
            lock = TrainLock(training_dir(store_root) / LOCK_NAME)
            lock.acquire()  # before touching the run folder: it may belong to a running trainer
            run_dir = runstate.prepare(run_dir, store_root, fresh=not resume)
            sink.add_file(run_dir / runstate.EVENTS)
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
    from semisam.checkpoints import CheckpointError
    from semisam.store.errors import StoreError

    if isinstance(exc, StoreError | CheckpointError | FileNotFoundError):
        return "bad_config", line
    return "internal", f"{type(exc).__name__}: {line}"


def _store_manifest(store, arch: str, kwargs: dict):
    from semisam.checkpoints import new_manifest

    labels = {name: int(v) for v, name in sorted(store.labels.items()) if int(v) != 0}
    if not labels:
        raise TrainError("bad_config", f"{store.root}: the store declares no label besides background")
    modality = (store.modality or "").upper()
    if modality not in ("CT", "MR"):
        log.warning("store modality %r: using percentile intensity normalisation (MR)", store.modality)
        modality = "MR" if modality != "CT" else "CT"
    return new_manifest(arch, labels, modality, kwargs=kwargs)


def _run(store_root, config, sink, dist, run_dir, resume, promote, cancel, t_start) -> TrainResult:
    import torch

    from semisam import checkpoints
    from semisam.device import resolve_device
    from semisam.specialists import build_specialist
    from semisam.store import LabeledStore
    from semisam.training import ddp, runstate
    from semisam.training.data import load_labeled, load_unlabeled
    from semisam.training.methods import build_parts
    from semisam.training.methods.base import TrainContext
    from semisam.training.trainer import Trainer
    from semisam.training.validate import evaluate

    emit = sink
    ckpt = None
    if resume:
        path = runstate.resume_point(run_dir)
        ckpt = runstate.load_checked(path)
        try:
            saved = TrainConfig.from_dict(ckpt.run["config"], f"{path / runstate.RUN}")
        except TrainError as exc:
            raise TrainError("damaged_checkpoint", f"{exc}; run without --resume to start over") from None
        if saved.to_json() != config.to_json():
            log.info("resuming with the checkpoint's config (the one given is ignored)")
        config = saved
    config.validate()
    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise TrainError("bad_config", f"device: {exc}") from None
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    dist = ddp.init(dist, device)
    store = LabeledStore(store_root)
    emit({"event": "phase", "phase": "loading"})

    # ----- which cases, which model
    if ckpt is not None:
        train_ids = list(ckpt.run["train_ids"])
        unlabeled_ids = list(ckpt.run["unlabeled_ids"])
        manifest = checkpoints.ModelManifest(**ckpt.run["manifest"])
        parent = ckpt.run.get("parent")
    else:
        train_ids = store.train_ids()
        if config.max_cases is not None:
            train_ids = train_ids[: config.max_cases]
        unlabeled_ids = [r.scan_id for r in store.unlabeled()]
        active = store.models.active()
        parent = active.version if active else None
        if active is not None:
            base = checkpoints.read_manifest(active.path)
            manifest = dataclasses.replace(
                base, parent=active.version, training={}, metrics={}, sha256="", created=""
            )
        else:
            manifest = _store_manifest(store, config.arch, config.model_kwargs)
    if not train_ids:
        raise TrainError(
            "no_training_cases",
            f"{store.root}: the store has no training case yet (validation cases never train); "
            "accept a case first (`semisam store add`)",
        )
    from semisam.training.promote import comparison_case_ids

    val_ids = comparison_case_ids(store)  # blind validation cases when there are any (promote.py)
    # ----- student: same initial weights on every rank (seeded), then the checkpoint's or parent's
    torch.manual_seed(config.seed)
    try:
        student = build_specialist(manifest.arch, **manifest.kwargs)
    except (TypeError, ValueError, KeyError) as exc:  # the kwargs do not fit the architecture
        raise TrainError("bad_config", f"model_kwargs {manifest.kwargs} for {manifest.arch}: {exc}") from None
    if ckpt is not None:
        try:
            student.load_state_dict(ckpt.student, strict=True)
        except RuntimeError as exc:
            raise TrainError(
                "damaged_checkpoint",
                f"checkpoint {ckpt.path}: its weights do not fit the model ({str(exc).splitlines()[0]}); "
                "run without --resume to start over",
            ) from None
    elif parent is not None:
        loaded, _ = checkpoints.load_model(store.models.get(parent).path)
        student.load_state_dict(loaded.state_dict(), strict=True)
    student = student.to(device).train()
    names = config.part_names
    labeled = load_labeled(store, train_ids, manifest, emit=emit)
    ctx = TrainContext(
        config=config,
        device=device,
        student=student,
        manifest=manifest,
        store=store,
        cache=cache_dir(store_root),
        labeled=labeled,
        unlabeled=[],
        emit=emit,
        generalists=[_parse_generalist(g) for g in config.generalists],
        rank=dist.rank,
        world_size=dist.world_size,
    )
    try:
        parts = build_parts(names, config.parts, ctx)
    except ValueError as exc:  # an unavailable part or a bad part option
        raise TrainError("bad_config", f"method {config.method!r}: {exc}") from exc
    if any(getattr(p, "needs_unlabeled", False) for p in parts):
        ctx.unlabeled = load_unlabeled(store, unlabeled_ids, manifest)
    for p in parts:
        p.setup(ctx)
    run_info = {
        "config": config.to_json(),
        "manifest": dataclasses.asdict(manifest),
        "train_ids": train_ids,
        "unlabeled_ids": unlabeled_ids,
        "parent": parent,
        "store": str(store.root),
    }

    def validate_now(it: int) -> dict:
        return evaluate(student, manifest, store, val_ids, device)

    trainer = Trainer(
        ctx,
        parts,
        dist,
        run_dir,
        run_info,
        cancel=(cancel.is_set if cancel else None),
        validate=validate_now if val_ids else None,
    )
    start = 0
    if ckpt is not None:
        try:
            trainer.load_state_dict(ckpt.state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainError(
                "damaged_checkpoint",
                f"checkpoint {ckpt.path}: its optimiser state cannot be restored ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); run without --resume to start over",
            ) from None
        start = ckpt.iteration
    emit(
        {
            "event": "start",
            "store": str(store.root),
            "method": "+".join(names),
            "config": config.to_json(),
            "device": str(device),
            "iterations": config.iterations,
            "train_cases": len(train_ids),
            "unlabeled_cases": len(unlabeled_ids),
            "validation_cases": len(val_ids),
            "parent": parent,
            "resumed_from": None if ckpt is None else start,
            "world_size": dist.world_size,
        }
    )
    emit({"event": "phase", "phase": "training", "done": start, "total": config.iterations})
    if start < config.iterations:
        trainer.run(start)
        trainer.checkpoint(config.iterations)  # a kill from here on resumes straight into validation
    elif cancel is not None and cancel.is_set():
        raise Cancelled(start, str(runstate.latest(run_dir)))
    result = TrainResult("done", EXIT_DONE, iterations=config.iterations, losses=trainer.loss_curve)
    if not dist.is_main:
        return result  # the final checkpoint's barrier was the last collective; rank 0 saves alone

    # ----- validation, saving, registration, promotion (rank 0)
    emit({"event": "phase", "phase": "validating", "done": 0, "total": len(val_ids)})
    student.eval()
    validation = evaluate(student, manifest, store, val_ids, device, emit=emit)
    if validation["dice"] is not None:
        emit(
            {
                "event": "validation",
                "iteration": config.iterations,
                "dice": validation["dice"],
                "per_case": validation["per_case"],
            }
        )
    if cancel is not None and cancel.is_set():  # SIGTERM while validating: nothing registered
        raise Cancelled(config.iterations, str(runstate.latest(run_dir)))
    emit({"event": "phase", "phase": "saving"})
    training = {
        "method": "+".join(names),
        "config": config.to_json(),
        "case_ids": {"train": train_ids, "unlabeled": unlabeled_ids, "validation": val_ids},
        "iterations": config.iterations,
        "seconds": round(trainer.seconds, 2),
        "device": str(device),
        "world_size": dist.world_size,
        "losses": trainer.loss_curve,
        "validation_curve": trainer.val_curve
        + (
            [{"iteration": config.iterations, "dice": validation["dice"]}]
            if validation["dice"] is not None
            else []
        ),
        "generalists": list(config.generalists),
    }
    metrics = (
        {} if validation["dice"] is None else {"dice": validation["dice"], "per_case": validation["per_case"]}
    )
    new_manifest = dataclasses.replace(
        manifest, parent=parent, training=training, metrics=metrics, sha256="", created=""
    )
    version = _registered_version(store, run_dir)
    if version is None:
        model_dir = run_dir / runstate.MODEL
        checkpoints.save_model(model_dir, student, new_manifest, overwrite=True)
        rec = store.models.add(
            model_dir,
            metrics=None if validation["dice"] is None else {"dice": validation["dice"]},
            evaluated_on=val_ids,
        )
        version = rec.version
        from semisam.fileio import atomic_write_json

        atomic_write_json(run_dir / REGISTERED, {"version": version, "sha256": rec.sha256})

    def evaluate_active(active) -> dict:
        model, man = checkpoints.load_model(active.path, device)
        return evaluate(model, man, store, val_ids, device)

    promoted, why = _promote(store, version, validation, train_ids, evaluate_active, promote)
    model_path = store.models.get(version).path
    runstate.clear(run_dir)
    (run_dir / REGISTERED).unlink(missing_ok=True)
    emit(
        {
            "event": "done",
            "version": version,
            "model_dir": str(model_path),
            "validation": validation,
            "promoted": promoted,
            "promotion": why,
            "seconds": round(time.monotonic() - t_start, 2),
            "iterations": config.iterations,
        }
    )
    result.version, result.model_dir, result.validation = version, str(model_path), validation
    result.promoted, result.promotion, result.seconds = promoted, why, time.monotonic() - t_start
    return result


def _promote(store, version, validation, train_ids, evaluate_active, allow) -> tuple[bool, str]:
    from semisam.training.promote import decide_and_promote

    return decide_and_promote(store, version, validation, train_ids, evaluate_active, allow=allow)


def _registered_version(store, run_dir: Path) -> str | None:
    """The version a killed run registered already (so a resume does not register it twice)."""
    try:
        data = json.loads((run_dir / REGISTERED).read_text(encoding="utf-8"))
        rec = store.models.get(str(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec.version if rec.sha256 == data.get("sha256") else None


def _parse_generalist(spec: str) -> tuple[str, str | None]:
    name, sep, ckpt = spec.partition(":")
    return name.strip().lower(), (ckpt if sep and ckpt else None)
