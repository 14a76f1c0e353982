"""The named steps of one training run; :func:`semisam.training.job.train` runs them in order.

``settle_config`` (the checkpoint's config on resume) -> ``pick_device`` -> ``plan_cases`` (which cases,
which base model) -> ``build_student`` -> ``build_trainer`` (context, method parts, the trainer, restored
on resume) -> ``run_training`` -> ``validate_final`` -> ``save_and_register`` -> ``promote_version`` ->
``finish``. Each step takes what the earlier ones settled and raises :class:`TrainError` with the kind of
what went wrong; none emits a terminal event (the job does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semisam.training.config import TrainConfig
from semisam.training.errors import Cancelled, TrainError

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Any]


@dataclass
class RunPlan:
    """What a run trains, settled before any weights exist.

    Attributes:
        config: the run's settings (the checkpoint's on resume).
        checkpoint: the :class:`~semisam.training.runstate.RunCheckpoint` resumed from, or ``None``.
        train_ids, unlabeled_ids, val_ids: store case ids that teach, the unlabeled pool, and the
            validation cases the new version is compared on.
        manifest: the new model's manifest before training (the parent's, else a new ``config.arch``).
        parent: the version warm-started from (the active one), or ``None``.
    """

    config: TrainConfig
    checkpoint: Any
    train_ids: list[str]
    unlabeled_ids: list[str]
    val_ids: list[str]
    manifest: Any
    parent: str | None

    def run_info(self, store_root: Path) -> dict[str, Any]:
        """What each checkpoint's ``run.json`` records (enough to resume)."""
        return {
            "config": self.config.to_json(),
            "manifest": dataclasses.asdict(self.manifest),
            "train_ids": self.train_ids,
            "unlabeled_ids": self.unlabeled_ids,
            "parent": self.parent,
            "store": str(store_root),
        }


def settle_config(run_dir: Path, config: TrainConfig, resume: bool):
    """``(config, checkpoint or None)``: on ``resume`` the checkpoint's config (the given one is ignored);
    raises ``no_checkpoint`` / ``damaged_checkpoint`` when there is nothing usable to resume."""
    from semisam.training import runstate

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
    return config, ckpt


def pick_device(config: TrainConfig, dist):
    """``(device, dist)``: the device the config names (each DDP rank's own GPU on CUDA), process group
    initialised."""
    import torch

    from semisam.device import resolve_device
    from semisam.training import ddp

    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise TrainError("bad_config", f"device: {exc}") from None
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device, ddp.init(dist, device)


def plan_cases(store, config: TrainConfig, ckpt) -> RunPlan:
    """Which cases teach and which model is the base: the checkpoint's on resume, else the store's
    training cases (at most ``config.max_cases``, oldest first), its unlabeled pool, and its active
    version (a new ``config.arch`` when there is none); ``iterations=None`` is resolved for that many
    training cases (:meth:`TrainConfig.resolved`)."""
    from semisam import model_folder
    from semisam.store.active import active_specialist
    from semisam.training.promote import comparison_case_ids

    if ckpt is not None:
        train_ids = list(ckpt.run["train_ids"])
        unlabeled_ids = list(ckpt.run["unlabeled_ids"])
        try:
            manifest = model_folder.ModelManifest(**ckpt.run["manifest"])
        except TypeError as exc:
            raise TrainError(
                "damaged_checkpoint", f"checkpoint {ckpt.path}: its manifest is unreadable ({exc})"
            ) from None
        parent = ckpt.run.get("parent")
    else:
        train_ids = store.train_ids()
        if config.max_cases is not None:
            train_ids = train_ids[: config.max_cases]
        unlabeled_ids = [r.scan_id for r in store.unlabeled()]
        found = active_specialist(store)  # warm start from the active version, when there is one
        if found is not None:
            active, base = found
            parent = active.version
            manifest = dataclasses.replace(
                base, parent=parent, training={}, metrics={}, sha256="", created=""
            )
        else:
            parent = None
            manifest = new_manifest(store, config.arch, config.model_kwargs)
    if not train_ids:
        raise TrainError(
            "no_training_cases",
            f"{store.root}: the store has no training case yet (validation cases never train); "
            "accept a case first (`semisam store add`)",
        )
    val_ids = comparison_case_ids(store)  # blind validation cases when there are any (promote.py)
    config = config.resolved(len(train_ids))  # iterations that follow the data (a checkpoint's are fixed)
    return RunPlan(config, ckpt, train_ids, unlabeled_ids, val_ids, manifest, parent)


def new_manifest(store, arch: str, kwargs: dict):
    """The manifest of a new model for the store's labels and modality."""
    from semisam.model_folder import new_manifest as make

    labels = {name: int(v) for v, name in sorted(store.labels.items()) if int(v) != 0}
    if not labels:
        raise TrainError("bad_config", f"{store.root}: the store declares no label besides background")
    modality = (store.modality or "").upper()
    if modality not in ("CT", "MR"):
        log.warning("store modality %r: using percentile intensity normalisation (MR)", store.modality)
        modality = "MR" if modality != "CT" else "CT"
    return make(arch, labels, modality, kwargs=kwargs)


def build_student(plan: RunPlan, store, device):
    """The student, with the same initial weights on every rank (seeded), then the checkpoint's (resume)
    or the parent's (warm start)."""
    import torch

    from semisam import model_folder
    from semisam.specialists import build_specialist

    manifest, ckpt = plan.manifest, plan.checkpoint
    torch.manual_seed(plan.config.seed)
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
    elif plan.parent is not None:
        loaded, _ = model_folder.load_model(store.models.get(plan.parent).path)
        student.load_state_dict(loaded.state_dict(), strict=True)
    return student.to(device).train()


def build_trainer(
    plan: RunPlan, store, student, device, dist, run_dir: Path, cache: Path, emit: Emit, cancel
):
    """``(trainer, first iteration)``: the context (labeled cases loaded on the model grid, the unlabeled
    pool when a part needs it), the method parts set up, the trainer; on resume its state restored."""
    from semisam.training.data import load_labeled, load_unlabeled
    from semisam.training.methods import build_parts
    from semisam.training.methods.base import TrainContext
    from semisam.training.trainer import Trainer
    from semisam.training.validation_dice import evaluate

    config = plan.config
    ctx = TrainContext(
        config=config,
        device=device,
        student=student,
        manifest=plan.manifest,
        store=store,
        cache=cache,
        labeled=load_labeled(store, plan.train_ids, plan.manifest, emit=emit),
        unlabeled=[],
        emit=emit,
        generalists=[parse_generalist(g) for g in config.generalists],
        rank=dist.rank,
        world_size=dist.world_size,
        cancel=(cancel.is_set if cancel else lambda: False),
    )
    try:
        parts = build_parts(config.part_names, config.parts, ctx)
    except ValueError as exc:  # an unavailable part or a bad part option
        raise TrainError("bad_config", f"method {config.method!r}: {exc}") from exc
    if any(getattr(p, "needs_unlabeled", False) for p in parts):
        ctx.unlabeled = load_unlabeled(store, plan.unlabeled_ids, plan.manifest)
    for p in parts:
        p.setup(ctx)

    def validate_now(it: int) -> dict:
        return evaluate(student, plan.manifest, store, plan.val_ids, device)

    trainer = Trainer(
        ctx,
        parts,
        dist,
        run_dir,
        plan.run_info(store.root),
        cancel=(cancel.is_set if cancel else None),
        validate=validate_now if plan.val_ids else None,
    )
    ckpt = plan.checkpoint
    if ckpt is None:
        return trainer, 0
    try:
        trainer.load_state_dict(ckpt.state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainError(
            "damaged_checkpoint",
            f"checkpoint {ckpt.path}: its optimiser state cannot be restored ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); run without --resume to start over",
        ) from None
    return trainer, ckpt.iteration


def run_training(
    plan: RunPlan, trainer, start: int, store, device, dist, run_dir: Path, emit: Emit, cancel
) -> None:
    """The ``start`` event, then the trainer's loop from ``start``; a final checkpoint, so that a kill
    from here on resumes straight into validation. When the time budget made the trainer plan fewer
    iterations, ``plan.config.iterations`` becomes the number trained."""
    from semisam.training import runstate

    config = plan.config
    emit(
        {
            "event": "start",
            "store": str(store.root),
            "method": "+".join(config.part_names),
            "config": config.to_json(),
            "device": str(device),
            "iterations": config.iterations,
            "train_cases": len(plan.train_ids),
            "unlabeled_cases": len(plan.unlabeled_ids),
            "validation_cases": len(plan.val_ids),
            "parent": plan.parent,
            "resumed_from": None if plan.checkpoint is None else start,
            "world_size": dist.world_size,
        }
    )
    emit({"event": "phase", "phase": "training", "done": start, "total": trainer.total})
    if start < trainer.total:
        trainer.run(start)
        trainer.checkpoint(trainer.total)
    elif cancel is not None and cancel.is_set():
        raise Cancelled(start, str(runstate.latest(run_dir)))
    if trainer.total != config.iterations:  # the time budget planned fewer: that is what was trained
        plan.config = config.replace(iterations=trainer.total)


def validate_final(plan: RunPlan, student, store, device, run_dir: Path, emit: Emit, cancel) -> dict:
    """Dice of the trained student on the validation cases (``{"dice", "per_case", "cases"}``); a cancel
    while validating ends the run with nothing registered."""
    from semisam.training import runstate
    from semisam.training.validation_dice import evaluate

    config = plan.config
    emit({"event": "phase", "phase": "validating", "done": 0, "total": len(plan.val_ids)})
    student.eval()
    validation = evaluate(student, plan.manifest, store, plan.val_ids, device, emit=emit)
    if validation["dice"] is not None:
        emit(
            {
                "event": "validation",
                "iteration": config.iterations,
                "dice": validation["dice"],
                "per_case": validation["per_case"],
            }
        )
    if cancel is not None and cancel.is_set():
        raise Cancelled(config.iterations, str(runstate.latest(run_dir)))
    return validation


def save_and_register(
    plan: RunPlan, trainer, student, validation: dict, store, device, dist, run_dir: Path, emit: Emit
) -> str:
    """Save the new model (its manifest records how it was trained) and register it in the store; returns
    the version. A run killed after registering and resumed finds its version instead of adding a second."""
    from semisam import model_folder
    from semisam.fileio import atomic_write_json
    from semisam.training import runstate

    config = plan.config
    emit({"event": "phase", "phase": "saving"})
    dice = validation["dice"]
    training = {
        "method": "+".join(config.part_names),
        "config": config.to_json(),
        "case_ids": {"train": plan.train_ids, "unlabeled": plan.unlabeled_ids, "validation": plan.val_ids},
        "iterations": config.iterations,
        "seconds": round(trainer.seconds, 2),
        "device": str(device),
        "world_size": dist.world_size,
        "losses": trainer.loss_curve,
        "validation_curve": trainer.val_curve
        + ([{"iteration": config.iterations, "dice": dice}] if dice is not None else []),
        "generalists": list(config.generalists),
    }
    metrics = {} if dice is None else {"dice": dice, "per_case": validation["per_case"]}
    manifest = dataclasses.replace(
        plan.manifest, parent=plan.parent, training=training, metrics=metrics, sha256="", created=""
    )
    version = registered_version(store, run_dir)
    if version is None:
        model_dir = run_dir / runstate.MODEL
        model_folder.save_model(model_dir, student, manifest, overwrite=True)
        rec = store.models.add(
            model_dir, metrics=None if dice is None else {"dice": dice}, evaluated_on=plan.val_ids
        )
        version = rec.version
        atomic_write_json(run_dir / runstate.REGISTERED, {"version": version, "sha256": rec.sha256})
    return version


def registered_version(store, run_dir: Path) -> str | None:
    """The version a killed run registered already (so a resume does not register it twice)."""
    from semisam.training import runstate

    try:
        data = json.loads((run_dir / runstate.REGISTERED).read_text(encoding="utf-8"))
        rec = store.models.get(str(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec.version if rec.sha256 == data.get("sha256") else None


def promote_version(
    plan: RunPlan, version: str, validation: dict, store, device, allow: bool
) -> tuple[bool, str]:
    """The promotion rule (:mod:`semisam.training.promote`): ``(promoted, why)``."""
    from semisam import model_folder
    from semisam.training.promote import decide_and_promote
    from semisam.training.validation_dice import evaluate

    def evaluate_active(active) -> dict:
        model, man = model_folder.load_model(active.path, device)
        return evaluate(model, man, store, plan.val_ids, device)

    return decide_and_promote(store, version, validation, plan.train_ids, evaluate_active, allow=allow)


def finish(run_dir: Path) -> None:
    """Clear the run folder of the finished run's checkpoints (its events and marker stay)."""
    from semisam.training import runstate

    runstate.clear(run_dir)


def parse_generalist(spec: str) -> tuple[str, str | None]:
    """``"NAME[:CHECKPOINT]"`` -> ``(name, checkpoint or None)``."""
    name, sep, ckpt = spec.partition(":")
    return name.strip().lower(), (ckpt if sep and ckpt else None)


__all__ = [
    "RunPlan",
    "build_student",
    "build_trainer",
    "finish",
    "new_manifest",
    "parse_generalist",
    "pick_device",
    "plan_cases",
    "promote_version",
    "registered_version",
    "run_training",
    "save_and_register",
    "settle_config",
    "validate_final",
]
