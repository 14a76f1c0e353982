"""Run checkpoints: everything needed to continue a run after a crash, written atomically.

Layout of the run folder (``STORE/training/run/`` unless ``--work-dir``)::

    events.jsonl            every event of the run (appended to by a resumed run)
    latest.json             {"checkpoint": "ckpt-000150", "iteration": 150} - the commit point
    ckpt-000150/            weights.safetensors  the student's state dict (safetensors)
                            state.pt             optimiser, scheduler, GradScaler, every part's state
                                                 (e.g. the EMA teacher) and RNG states: tensors and
                                                 plain types only, read with torch.load(weights_only=True)
                            run.json             config, base manifest, case ids, iteration, seconds

A checkpoint folder is written under a hidden name, fsync'd and renamed; then ``latest.json`` is
replaced atomically and older checkpoint folders are removed. A SIGKILL at any moment leaves
``latest.json`` pointing at a complete checkpoint (or no ``latest.json``: a fresh start).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from semisam.fileio import atomic_write_json, fsync_dir, fsync_file, tmp_name

log = logging.getLogger(__name__)

LATEST = "latest.json"
WEIGHTS = "weights.safetensors"
STATE = "state.pt"
RUN = "run.json"


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
    for p in run_dir.iterdir():  # older checkpoints and leftovers of killed writes
        if p.is_dir() and p.name != name and (p.name.startswith("ckpt-") or p.name.startswith(".")):
            shutil.rmtree(p, ignore_errors=True)
    return dest


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
    """Remove checkpoints (and ``latest.json``) of a finished or abandoned run."""
    if not run_dir.is_dir():
        return
    (run_dir / LATEST).unlink(missing_ok=True)
    for p in run_dir.iterdir():
        if p.is_dir() and (
            p.name.startswith("ckpt-") or p.name.startswith(".") or p.name.startswith("model")
        ):
            shutil.rmtree(p, ignore_errors=True)
        elif p.name == "events.jsonl" and not keep_events:
            p.unlink(missing_ok=True)


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
