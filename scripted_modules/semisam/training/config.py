"""``TrainConfig``: every knob of a training run, recorded in full in the new model's manifest.

A run is reproducible from its config and the store: the same config, store content, device and seed
give the same weights. ``--config FILE.json`` overrides the defaults; command-line options override the
file. Unknown keys are refused (a typo must not silently train with a default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semisam.training.errors import TrainError


@dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        method: ``+``-joined method parts (``supervised`` is always on), e.g. ``"mean_teacher"``.
        iterations: optimiser steps; ``None`` (the default): follow the data, ``iterations_per_case`` x
            the training cases, clamped to ``[min_iterations, max_iterations]`` (resolved when the run
            starts and recorded). Measured (``Testing/benchmarks/learning_curve.py``, thalamus
            development task, whole-head scans, 4 held-out subjects, one CPU thread): 200 iterations
            gave test Dice 0.50 / 0.52 / 0.53 with 4 / 8 / 12 labeled cases, this rule 0.81 / 0.84 /
            0.83: a fixed small count starves a growing labeled set.
        iterations_per_case, min_iterations, max_iterations: the rule for ``iterations=None``.
        max_minutes: wall-clock budget of the training loop in minutes (``None``: none). The run plans
            the iterations that fit at its measured speed (fewer than ``iterations`` when they would not
            fit, back up when the machine got faster; the learning rate's cosine decay follows the plan)
            and says so in ``budget`` events; the run is then machine-dependent (give ``None`` for a run
            that is reproducible bit for bit).
        seed: seeds weights of a new model, sampling, augmentation and every part.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (:func:`semisam.device.resolve_device`).
        arch: architecture of a new model when the store has none (``mamba_unet``/``unet2d``/``unet3d``).
        model_kwargs: constructor arguments of such a new model (e.g. narrower ``channels``); a warm
            start keeps its parent's.
        batch_size: labeled samples per step (per process under DDP).
        unlabeled_batch_size: unlabeled samples per step when a part needs them (default = batch_size).
        crop_size: 2.5D crop (H, W) in model-grid voxels; images smaller than it are zero-padded.
        patch_size: 3D patch (D, H, W) for ``unet3d`` (multiples of 16).
        foreground_fraction: share of labeled samples centred on a random structure voxel (the rest are
            uniform). Small lesions are < 1 % of voxels: uniform crops would almost never see them.
        lr, weight_decay: AdamW settings; ``warmup``: linear warm-up iterations, then cosine decay to
            ``lr * min_lr_ratio``.
        augment: MONAI augmentation of labeled and unlabeled crops (flips, small rotation/zoom,
            intensity scale/shift, Gaussian noise).
        weak_noise: std of the Gaussian noise of the ``weak`` view (``strong`` doubles it and adds a
            random gamma).
        amp: mixed precision on CUDA (``bf16`` where supported, else ``fp16`` with a GradScaler); ignored
            on CPU.
        checkpoint_every: iterations between run checkpoints (and on cancel).
        validate_every: iterations between validation-Dice events (0: only at the end).
        log_every: iterations between ``iteration`` events.
        refresh_every: iterations between the parts' ``refresh`` hook (pseudo-label refresh).
        generalists: ``["NAME[:CHECKPOINT]", ...]`` passed to the parts (default LiteMedSAM).
        parts: per-part options, ``{"mean_teacher": {"uncertainty": true}, ...}``.
        inject_nan_at: testing aid: the loss of this iteration is made NaN (exercises the NaN guard
            with a real run); ``None`` in normal use.
        max_cases: use at most this many training cases (oldest first; ``None``: all).
    """

    method: str = "supervised"
    iterations: int | None = None
    iterations_per_case: int = 500
    min_iterations: int = 1000
    max_iterations: int = 20000
    max_minutes: float | None = 10.0
    seed: int = 0
    device: str = "auto"
    arch: str = "mamba_unet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    unlabeled_batch_size: int | None = None
    crop_size: list[int] = field(default_factory=lambda: [128, 128])
    patch_size: list[int] = field(default_factory=lambda: [32, 96, 96])
    foreground_fraction: float = 0.6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    min_lr_ratio: float = 0.05
    augment: bool = True
    weak_noise: float = 0.05
    amp: bool = True
    checkpoint_every: int = 50
    validate_every: int = 0
    log_every: int = 1
    refresh_every: int = 50
    generalists: list[str] = field(default_factory=lambda: ["litemedsam"])
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    inject_nan_at: int | None = None
    max_cases: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys; then :meth:`validate`."""
        if not isinstance(data, dict):
            raise TrainError("bad_config", f"{where}: must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainError(
                "bad_config",
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            )
        cfg = cls(**data)
        cfg.validate(where)
        return cfg

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read ``FILE.json`` and apply ``overrides`` (command-line options that were given)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrainError("bad_config", f"{p}: cannot read the config: {exc}") from exc
        if not isinstance(data, dict):
            raise TrainError("bad_config", f"{p}: must hold a JSON object")
        data.update(overrides or {})
        return cls.from_dict(data, str(p))

    def resolved(self, n_train: int) -> TrainConfig:
        """This config with ``iterations`` fixed for ``n_train`` training cases (see the class doc)."""
        if self.iterations is not None:
            return self
        n = self.iterations_per_case * max(1, int(n_train))
        return self.replace(iterations=int(min(self.max_iterations, max(self.min_iterations, n))))

    def replace(self, **changes: Any) -> TrainConfig:
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self, where: str = "config") -> None:
        """Check every field's type and range (:mod:`semisam.training.options`) and the method parts'
        options; raises :class:`TrainError` (``bad_config``) naming the field."""
        from semisam.training.methods import MethodError, parse_method
        from semisam.training.options import CONFIG_FIELDS, MAX_STEP_VOXELS, check_fields, check_parts

        def bad(msg: str) -> TrainError:
            return TrainError("bad_config", f"{where}: {msg}")

        try:
            parse_method(self.method)
        except MethodError as exc:
            raise bad(f"method: {exc}") from None
        problem = check_fields({k: getattr(self, k) for k in CONFIG_FIELDS}, CONFIG_FIELDS) or check_parts(
            self.parts
        )
        if problem:
            raise bad(problem)
        for name, vals, n in (("crop_size", self.crop_size, 2), ("patch_size", self.patch_size, 3)):
            if not (isinstance(vals, list | tuple) and len(vals) == n):
                raise bad(f"{name} must be a list of {n} integers, got {vals!r}")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 4096 for v in vals):
                raise bad(f"{name} entries must be integers from 16 to 4096, got {list(vals)}")
            if any(v % 16 for v in vals):
                raise bad(f"{name} entries must be multiples of 16, got {list(vals)}")
        if self.min_iterations > self.max_iterations:
            raise bad(f"min_iterations {self.min_iterations} exceeds max_iterations {self.max_iterations}")
        batch = max(self.batch_size, self.unlabeled_batch_size or 0)
        for name, vals in (("crop_size", self.crop_size), ("patch_size", self.patch_size)):
            step = batch * math.prod(vals)
            if step > MAX_STEP_VOXELS:
                raise bad(
                    f"batch_size {batch} x {name} {list(vals)} = {step:,} voxels per step; at most "
                    f"{MAX_STEP_VOXELS:,}: lower the batch size or the {name}"
                )
        if not isinstance(self.generalists, list) or not self.generalists:
            raise bad(
                f"generalists must be a non-empty list of 'NAME[:CHECKPOINT]' strings, got {self.generalists!r}"
            )
        for spec in self.generalists:
            problem = generalist_spec_problem(spec)
            if problem:
                raise bad(f"generalists: {problem}")
        if not isinstance(self.model_kwargs, dict):
            raise bad(f"model_kwargs must be an object, got {self.model_kwargs!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device.strip().lower()):
            raise bad(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not isinstance(self.arch, str):
            raise bad(f"arch must be a string, got {self.arch!r}")
        if self.arch not in ("mamba_unet", "unet3d", "unet2d"):
            from semisam.specialists import SPECIALIST_REGISTRY

            if self.arch not in SPECIALIST_REGISTRY:
                raise bad(f"arch {self.arch!r} is unknown; choose one of {sorted(SPECIALIST_REGISTRY)}")

    @property
    def part_names(self) -> list[str]:
        from semisam.training.methods import parse_method

        return parse_method(self.method)


#: What ``device`` may name (:func:`semisam.device.resolve_device` decides whether CUDA is there).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d{1,3})?")


def generalist_spec_problem(spec: object) -> str | None:
    """What is wrong with a ``"NAME[:CHECKPOINT]"`` generalist spec, else ``None``: the name must be a
    registered generalist and a checkpoint, when given, an existing file (checked here, before any
    case is loaded or model built)."""
    from semisam.generalists.registry import GENERALIST_NAMES

    if not isinstance(spec, str) or not spec.strip():
        return f"expected 'NAME[:CHECKPOINT]', got {spec!r}"
    name, sep, ckpt = spec.partition(":")
    name = name.strip().lower()
    if name not in GENERALIST_NAMES:
        return f"unknown generalist {name!r} in {spec!r}; choose one of {', '.join(GENERALIST_NAMES)}"
    if sep and not ckpt.strip():
        return f"{spec!r} names no checkpoint after ':' (give NAME alone for the bundled weights)"
    if ckpt and not Path(ckpt).expanduser().is_file():
        return f"checkpoint file {ckpt!r} of {name!r} does not exist or is not a file"
    return None
