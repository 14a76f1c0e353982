"""``TrainConfig``: every knob of a training run, recorded in full in the new model's manifest.

A run is reproducible from its config and the store: the same config, store content, device and seed
give the same weights. ``--config FILE.json`` overrides the defaults; command-line options override the
file. Unknown keys are refused (a typo must not silently train with a default).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semisam.training.errors import TrainError


@dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes:
        method: ``+``-joined method parts (``supervised`` is always on), e.g. ``"mean_teacher"``.
        iterations: optimiser steps.
        seed: seeds weights of a new model, sampling, augmentation and every part.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (:func:`semisam.device.resolve_device`).
        arch: architecture of a new model when the store has none (``mamba_unet``/``unet3d``).
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
    iterations: int = 200
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

    def replace(self, **changes: Any) -> TrainConfig:
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def validate(self, where: str = "config") -> None:
        """Check types and ranges; raises :class:`TrainError` (``bad_config``) naming the field."""
        from semisam.training.methods import MethodError, parse_method

        def bad(msg: str) -> TrainError:
            return TrainError("bad_config", f"{where}: {msg}")

        try:
            parse_method(self.method)
        except MethodError as exc:
            raise bad(f"method: {exc}") from None
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "refresh_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup", "validate_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(f"{name} must be a non-negative integer, got {v!r}")
        if self.unlabeled_batch_size is not None and (
            not isinstance(self.unlabeled_batch_size, int) or self.unlabeled_batch_size < 1
        ):
            raise bad(f"unlabeled_batch_size must be a positive integer, got {self.unlabeled_batch_size!r}")
        if not (isinstance(self.crop_size, list | tuple) and len(self.crop_size) == 2):
            raise bad(f"crop_size must be [H, W], got {self.crop_size!r}")
        if not (isinstance(self.patch_size, list | tuple) and len(self.patch_size) == 3):
            raise bad(f"patch_size must be [D, H, W], got {self.patch_size!r}")
        for name, vals in (("crop_size", self.crop_size), ("patch_size", self.patch_size)):
            if not all(isinstance(v, int) and v >= 16 and v % 16 == 0 for v in vals):
                raise bad(f"{name} entries must be multiples of 16 (>= 16), got {list(vals)}")
        if not 0.0 <= float(self.foreground_fraction) <= 1.0:
            raise bad(f"foreground_fraction must be in [0, 1], got {self.foreground_fraction!r}")
        for name in ("lr", "weight_decay", "min_lr_ratio", "weak_noise"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or v < 0 or v != v:
                raise bad(f"{name} must be a non-negative number, got {v!r}")
        if not self.lr > 0:
            raise bad(f"lr must be > 0, got {self.lr!r}")
        if not isinstance(self.generalists, list) or not all(
            isinstance(g, str) and g for g in self.generalists
        ):
            raise bad(f"generalists must be a list of 'NAME[:CHECKPOINT]' strings, got {self.generalists!r}")
        if not isinstance(self.model_kwargs, dict):
            raise bad(f"model_kwargs must be an object, got {self.model_kwargs!r}")
        if not isinstance(self.parts, dict) or not all(isinstance(v, dict) for v in self.parts.values()):
            raise bad("parts must map a part name to an object of its options")
        if not isinstance(self.device, str):
            raise bad(f"device must be a string, got {self.device!r}")
        if self.arch not in ("mamba_unet", "unet3d"):
            from semisam.specialists import SPECIALIST_REGISTRY

            if self.arch not in SPECIALIST_REGISTRY:
                raise bad(f"arch {self.arch!r} is unknown; choose one of {sorted(SPECIALIST_REGISTRY)}")

    @property
    def part_names(self) -> list[str]:
        from semisam.training.methods import parse_method

        return parse_method(self.method)
