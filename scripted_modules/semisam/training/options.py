"""Types and ranges of every training setting: :class:`TrainConfig` fields and each method part's options.

A setting outside its range is refused before any case is loaded, with one line naming the field: a
typo or a value like ``weak_noise 1e999`` must not train for minutes with garbage (or with a default the
user did not ask for). The ranges are generous bounds of what can make sense, not recommendations: they
stop values that make work explode (a step of a billion voxels) or turn a loss into NaN / inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Voxels of one training step's labeled input (batch x crop, or batch x patch for 3D models). The
#: default step is 8 x 128 x 128 = 131 k voxels; 2^24 (16.8 M, 128x the default) keeps a step's
#: activations within a few GB on the 2.5D student while allowing e.g. batch 64 of 512 x 512 crops.
MAX_STEP_VOXELS = 2**24


@dataclass(frozen=True)
class Opt:
    """One setting's type and inclusive range.

    ``kind``: ``int``, ``float`` (ints accepted, bools never), ``bool``, or ``iters`` (a number of
    iterations as an int >= 0, or a fraction of the run as a float in ``[0, 1)``). ``optional``: ``None``
    is allowed (meaning "the default").
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    optional: bool = False

    def check(self, value: Any) -> str | None:
        """``None`` when ``value`` fits, else what is wrong (to follow the field's name)."""
        if value is None:
            return None if self.optional else "must be given (got null)"
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.kind == "int" and not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if self.kind == "iters":
            if isinstance(value, float) and not 0.0 <= value < 1.0:
                return f"must be iterations (an integer) or a fraction of the run in [0, 1), got {value!r}"
            if isinstance(value, int) and value < 0:
                return f"must be >= 0, got {value!r}"
            return None
        if self.lo is not None and value < self.lo:
            return f"must be >= {self.lo:g}, got {value!r}"
        if self.hi is not None and value > self.hi:
            return f"must be <= {self.hi:g}, got {value!r}"
        return None


_WEIGHT = Opt("float", 0, 1000)
_FRACTION = Opt("float", 0, 1)
_FLAG = Opt("bool")

#: TrainConfig's scalar fields (the list, dict and string fields are checked in ``TrainConfig.validate``).
CONFIG_FIELDS: dict[str, Opt] = {
    "iterations": Opt("int", 1, 10_000_000, optional=True),
    "iterations_per_case": Opt("int", 1, 1_000_000),
    "min_iterations": Opt("int", 1, 10_000_000),
    "max_iterations": Opt("int", 1, 10_000_000),
    "max_minutes": Opt("float", 0.01, 60 * 24 * 30, optional=True),
    "seed": Opt("int", 0, 2**63 - 1),
    "batch_size": Opt("int", 1, 4096),
    "unlabeled_batch_size": Opt("int", 1, 4096, optional=True),
    "foreground_fraction": _FRACTION,
    "lr": Opt("float", 1e-12, 10),
    "weight_decay": Opt("float", 0, 10),
    "warmup": Opt("int", 0, 10_000_000),
    "min_lr_ratio": _FRACTION,
    "augment": _FLAG,
    # intensities are normalised to ~unit range: a noise std above 10 only shows noise
    "weak_noise": Opt("float", 0, 10),
    "amp": _FLAG,
    "checkpoint_every": Opt("int", 1, 10_000_000),
    "validate_every": Opt("int", 0, 10_000_000),
    "log_every": Opt("int", 1, 10_000_000),
    "refresh_every": Opt("int", 1, 10_000_000),
    "inject_nan_at": Opt("int", 0, 10_000_000, optional=True),
    "max_cases": Opt("int", 1, 1_000_000, optional=True),
}

#: Each method part's options (``parts: {"mean_teacher": {"ema_decay": 0.99}}``); the parts' docstrings
#: say what each does. Unknown options are refused.
PART_OPTIONS: dict[str, dict[str, Opt]] = {
    "supervised": {"dice_weight": _WEIGHT, "ce_weight": _WEIGHT},
    "mean_teacher": {
        "ema_decay": _FRACTION,
        "consistency": _WEIGHT,
        "rampup": Opt("float", 0, 10_000_000),
        "noise": Opt("float", 0, 10),
        "uncertainty": _FLAG,
        "passes": Opt("int", 1, 64),
        "labeled": _FLAG,
    },
    "semisam_plus": {
        "weight": _WEIGHT,
        "rounds": Opt("int", 1, 20),
        "n_pos": Opt("int", 0, 64),
        "n_neg": Opt("int", 0, 64),
        "max_fg_fraction": _FRACTION,
        "min_rel_volume_3d": _FRACTION,
        "min_slices_3d": Opt("int", 1, 10_000),
        "min_score": _FRACTION,
        "min_agreement": _FRACTION,
        "min_coherence": _FRACTION,
        "min_case_agreement": _FRACTION,
        "absent_weight": _WEIGHT,
        "consensus": _FLAG,
        "presence": _FLAG,
        "views": _FLAG,
        "refresh_every": Opt("int", 1, 10_000_000, optional=True),
        "start": Opt("iters", optional=True),
        "rampup": Opt("iters", optional=True),
        "embedding_cache_bytes": Opt("int", 0, 2**50),
    },
    "cotrain": {
        "steps": Opt("int", 1, 100_000),
        "batch": Opt("int", 1, 256),
        "lr": Opt("float", 1e-12, 1),
        "max_minutes": Opt("float", 0.01, 60 * 24),
        "min_confidence": _FRACTION,
        "labeled": _FLAG,
    },
    "distill": {
        "weight": _WEIGHT,
        "pert_weight": _WEIGHT,
        "perturbations": Opt("int", 0, 16),
        "gamma": Opt("float", 0, 5),
        "sigma": Opt("float", 0, 5),
        "rows": Opt("int", 1, 256),
        "margin": Opt("int", 0, 64),
        "max_encodes": Opt("int", 0, 1_000_000),
        "perturb_unlabeled": _FLAG,
        "teacher_channels": Opt("int", 1, 4096),
        "start": Opt("iters", optional=True),
        "refresh_every": Opt("int", 1, 10_000_000, optional=True),
    },
}


def check_fields(values: dict[str, Any], specs: dict[str, Opt], prefix: str = "") -> str | None:
    """The first problem of ``values`` against ``specs`` as ``"<prefix><field> <what>"``, else ``None``.
    Keys of ``values`` that ``specs`` does not list are refused."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        where = f"{prefix.rstrip('.')}: " if prefix else ""
        return f"{where}unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(specs))}"
    for name, value in values.items():
        problem = specs[name].check(value)
        if problem:
            return f"{prefix}{name} {problem}"
    return None


def check_parts(parts: Any) -> str | None:
    """Problems of ``TrainConfig.parts`` (a part name -> its options object), else ``None``."""
    if not isinstance(parts, dict):
        return f"parts must map a part name to an object of its options, got {parts!r}"
    for name, options in parts.items():
        if name not in PART_OPTIONS:
            return f"parts: unknown part {name!r}; known: {', '.join(sorted(PART_OPTIONS))}"
        if not isinstance(options, dict):
            return f"parts.{name} must be an object of options, got {options!r}"
        problem = check_fields(options, PART_OPTIONS[name], f"parts.{name}.")
        if problem:
            return problem
    return None
