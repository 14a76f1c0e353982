"""Run checkpoints: everything needed to continue a run after a crash, written atomically.

Layout of the run folder (``STORE/training/run/`` unless ``--work-dir``)::

    semisam-run.json        the marker: this folder is a run folder made by SemiSAM
    events.jsonl            every event of the run (appended to by a resumed run)
    latest.json             {"checkpoint": "ckpt-000150", "iteration": 150} - the commit point
    ckpt-000150/            weights.safetensors  the student's state dict (safetensors)
                            state.pt             optimiser, scheduler, GradScaler, every part's state
                                                 (e.g. the EMA teacher) and RNG states: tensors and
                                                 plain types only, read with torch.load(weights_only=True)
                            run.json             config, base manifest, case ids, iteration, seconds
    semisam-model-to-register/   the new model folder, until it is registered
    registered.json         {"version", "sha256"} once it is (a resumed run does not register it twice)

A checkpoint folder is written under a hidden name, fsync'd and renamed; then ``latest.json`` is
replaced atomically and older checkpoint folders are removed. A SIGKILL at any moment leaves
``latest.json`` pointing at a complete checkpoint (or no ``latest.json``: a fresh start).

The run folder is the product's own: :func:`prepare` accepts only an empty (or new) folder, one holding
the marker, or the store's own ``training/run``; never the store itself or another folder inside it.
Clean-up removes only the names listed above and the hidden temporary names this module and
:func:`semisam.model_folder.save_model` write there (:data:`OWN_NAMES`): never a pattern that could match
a user's file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from semisam.fileio import TMP_PREFIX, atomic_write_json, fsync_dir, fsync_file, tmp_name
from semisam.training.errors import TrainError

log = logging.getLogger(__name__)

LATEST = "latest.json"
WEIGHTS = "weights.safetensors"
STATE = "state.pt"
RUN = "run.json"
MARKER = "semisam-run.json"
EVENTS = "events.jsonl"
REGISTERED = "registered.json"
#: The new model folder, saved here before it is registered (a name no user picks by chance).
MODEL = "semisam-model-to-register"
#: Every name the product writes into a run folder (besides :data:`MARKER`): checkpoint folders, the
#: model folder saved before registering, the commit files, and the hidden temporary names of their
#: atomic writes (``fileio.tmp_name``: prefix, name, ``-`` and 12 hex digits).
OWN_NAMES = re.compile(
    rf"ckpt-\d{{6,}}|{re.escape(MODEL)}|{re.escape(LATEST)}|{re.escape(REGISTERED)}|"
    rf"{re.escape(TMP_PREFIX)}(ckpt-\d{{6,}}|{re.escape(MODEL)}|{re.escape(MODEL)}\.old|{re.escape(LATEST)}|{re.escape(REGISTERED)})-[0-9a-f]{{12}}"
)


@dataclass
class RunCheckpoint:
    """A loaded checkpoint: ``iteration`` done, ``student`` state dict, ``state`` (optimiser etc.),
    ``run`` (the run.json dict), ``path`` its folder."""

    iteration: int
    student: dict[str, torch.Tensor]
    state: dict[str, Any]
    run: dict[str, Any]
    path: Path


def save(run_dir: Path, iteration: int, student: torch.nn.Module, state: dict[str, Any], run: dict) -> Path:
    """Write checkpoint ``ckpt-<iteration>`` and make it the latest; returns its folder."""
    from safetensors.torch import save_file

    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{iteration:06d}"
    dest = run_dir / name
    tmp = tmp_name(run_dir, name)
    tmp.mkdir()
    try:
        sd = {k: v.detach().to("cpu").contiguous() for k, v in student.state_dict().items()}
        save_file(sd, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        (tmp / RUN).write_text(json.dumps({**run, "iteration": iteration}, indent=2), encoding="utf-8")
        for f in (WEIGHTS, STATE, RUN):
            fsync_file(tmp / f)
        fsync_dir(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(run_dir / LATEST, {"checkpoint": name, "iteration": iteration})
    for p in run_dir.iterdir():  # older checkpoints and leftovers of killed checkpoint writes
        if p.name != name and _is_checkpoint_name(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
    return dest


def _is_checkpoint_name(name: str) -> bool:
    return (
        re.fullmatch(rf"ckpt-\d{{6,}}|{re.escape(TMP_PREFIX)}ckpt-\d{{6,}}-[0-9a-f]{{12}}", name) is not None
    )


def latest(run_dir: Path) -> Path | None:
    """Folder of the latest complete checkpoint, or ``None``."""
    try:
        data = json.loads((run_dir / LATEST).read_text(encoding="utf-8"))
        path = run_dir / str(data["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if (path / STATE).is_file() and (path / WEIGHTS).is_file() else None


def load(path: Path) -> RunCheckpoint:
    """Read a checkpoint folder (weights with safetensors, state with ``weights_only=True``)."""
    from safetensors.torch import load_file

    run = json.loads((path / RUN).read_text(encoding="utf-8"))
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    student = load_file(str(path / WEIGHTS), device="cpu")
    return RunCheckpoint(int(run["iteration"]), student, state, run, path)


def clear(run_dir: Path, keep_events: bool = True) -> None:
    """Remove what a finished or abandoned run left in its folder: only :data:`OWN_NAMES` (and the events
    file unless ``keep_events``); anything else in the folder is left alone."""
    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if OWN_NAMES.fullmatch(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        elif p.name == EVENTS and not keep_events and not p.is_dir():
            p.unlink(missing_ok=True)


def prepare(run_dir: Path, store_root: Path, fresh: bool) -> Path:
    """Make ``run_dir`` ready for a run of the store in ``store_root``; returns it, resolved.

    Accepted: the store's own ``training/run``; a new or empty folder; a folder holding :data:`MARKER`
    (a run folder made here before). Refused (``bad_config``, nothing touched): a file, the store itself
    or any other folder inside it, a folder that holds the store, and a non-empty folder without the
    marker (it may hold the user's files; clean-up would have nothing to do there). ``fresh``: clear the
    previous run's checkpoints and events (only :data:`OWN_NAMES`).
    """
    store = Path(store_root).expanduser().resolve()
    own = (store / "training" / "run").resolve()
    run = Path(run_dir).expanduser().resolve()
    where = f"run folder {run}"
    if run.exists() and not run.is_dir():
        raise TrainError("bad_config", f"{where}: is a file, not a folder; choose a new or empty folder")
    if run != own:
        if run == store or store in run.parents:
            raise TrainError(
                "bad_config",
                f"{where}: lies inside the store {store}; choose a folder outside it (or leave --work-dir "
                "out: the store's own training/run is used)",
            )
        if run in store.parents:
            raise TrainError("bad_config", f"{where}: holds the store {store}; choose a new or empty folder")
        if run.is_dir() and not (run / MARKER).is_file() and any(run.iterdir()):
            raise TrainError(
                "bad_config",
                f"{where}: is not empty and is not a SemiSAM run folder (no {MARKER}); choose a new or "
                "empty folder",
            )
    run.mkdir(parents=True, exist_ok=True)
    if not (run / MARKER).is_file():
        atomic_write_json(run / MARKER, {"semisam_run": 1, "store": str(store)})
    if fresh:
        clear(run, keep_events=False)
    return run


def resume_point(run_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues from; raises :class:`TrainError` saying why there is none
    (``no_checkpoint``) or why it cannot be used (``damaged_checkpoint``)."""
    path = run_dir / LATEST
    if not path.is_file():
        raise TrainError(
            "no_checkpoint",
            f"nothing to resume in {run_dir}: no checkpoint (the last run finished, or none was started "
            "there); run without --resume to start a new one",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ckpt = run_dir / str(data["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(
            "damaged_checkpoint", f"{path} is damaged ({exc}); run without --resume to start over"
        ) from None
    if not _is_checkpoint_name(ckpt.name) or not ckpt.is_dir():
        raise TrainError(
            "damaged_checkpoint",
            f"{path} names checkpoint {ckpt.name}, which is missing; run without --resume to start over",
        )
    return ckpt


def load_checked(path: Path) -> RunCheckpoint:
    """:func:`load`, with a damaged file reported as ``damaged_checkpoint`` naming it."""
    try:
        ckpt = load(path)
        if not isinstance(ckpt.run.get("config"), dict) or not isinstance(ckpt.run.get("manifest"), dict):
            raise ValueError(f"{RUN} lacks the run's config or manifest")
        for key in ("train_ids", "unlabeled_ids"):
            if not isinstance(ckpt.run.get(key), list):
                raise ValueError(f"{RUN} lacks {key}")
    except Exception as exc:  # noqa: BLE001 - any unreadable part means the checkpoint cannot be used
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise TrainError(
            "damaged_checkpoint",
            f"checkpoint {path} is damaged ({type(exc).__name__}: {line}); run without --resume to start over",
        ) from None
    return ckpt


def disk_full(exc: BaseException, folder: Path, min_free: int = 64 * 2**20) -> bool:
    """Whether ``exc`` is a write that failed for lack of space under ``folder``: ``ENOSPC`` / ``EDQUOT``
    anywhere in its chain, a writer's own words for it (safetensors: "No space left on device"), or a
    write error while less than ``min_free`` bytes are left there (torch's zip writer reports a full disk
    as a ``RuntimeError`` about an unexpected position)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, OSError | RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < min_free
    except OSError:
        return False


def rng_state(device: torch.device) -> dict[str, Any]:
    """Torch RNG states (CPU and, on CUDA, the device's) as tensors."""
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
