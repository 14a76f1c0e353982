"""Method parts: a registry of build functions ``build(config: dict, ctx: TrainContext) -> MethodPart``.

``--method mean_teacher+semisam_plus`` is parsed by :func:`parse_method` into part names; ``supervised``
is always included (labeled cases always teach). A registry entry is either a build function or a
``"module:function"`` string imported on first use, so parts whose modules live elsewhere are listed
before they are importable, with a clear error when they are missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .base import Batch, CaseData, MethodPart, PartBase, StudentOutput, TrainContext

BuildFn = Callable[[dict[str, Any], TrainContext], MethodPart]

#: Part name -> build function or lazy ``"module:function"`` reference.
METHOD_PARTS: dict[str, BuildFn | str] = {
    "supervised": "semisam.training.methods.supervised:build",
    "mean_teacher": "semisam.training.methods.mean_teacher:build",
    "semisam_plus": "semisam.training.methods.semisam_plus:build",
    "distill": "semisam.training.methods.distill:build",
    "cotrain": "semisam.training.methods.cotrain:build",
}

#: Parts that work on another part's results, which must come before them in the method.
NEEDS_PART: dict[str, str] = {"cotrain": "semisam_plus"}


class MethodError(ValueError):
    """An unknown or unavailable method part; the message names it and the known parts."""


def parse_method(text: str) -> list[str]:
    """``"semisam_plus+distill"`` -> ``["supervised", "semisam_plus", "distill"]`` (validated).

    ``supervised`` always comes first (added when absent); duplicates are dropped, order kept.

    Raises:
        MethodError: an empty name, one not in :data:`METHOD_PARTS`, or a part without the part it
            needs before it (:data:`NEEDS_PART`).
    """
    if not isinstance(text, str) or not text.strip():
        raise MethodError(f"method must be part names joined by '+', e.g. 'supervised', got {text!r}")
    names = [n.strip() for n in text.split("+")]
    if any(not n for n in names):
        raise MethodError(f"method {text!r} has an empty part name (two '+' in a row?)")
    unknown = [n for n in names if n not in METHOD_PARTS]
    if unknown:
        raise MethodError(
            f"unknown method part(s) {', '.join(map(repr, unknown))} in {text!r}; "
            f"known: {', '.join(sorted(METHOD_PARTS))}"
        )
    out = ["supervised"]
    for n in names:
        if n not in out:
            out.append(n)
    for n, needed in NEEDS_PART.items():
        if n in out and (needed not in out or out.index(needed) > out.index(n)):
            raise MethodError(f"method part {n!r} works on {needed!r}'s results: use '{needed}+{n}'")
    return out


def build_fn(name: str) -> BuildFn:
    """The build function of part ``name`` (importing a lazy entry)."""
    entry = METHOD_PARTS.get(name)
    if entry is None:
        raise MethodError(f"unknown method part {name!r}; known: {', '.join(sorted(METHOD_PARTS))}")
    if callable(entry):
        return entry
    module, _, func = entry.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise MethodError(
                f"method part {name!r} is registered but its module {module} is not installed in this build"
            ) from exc
        raise
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise MethodError(f"method part {name!r}: {module} has no build function {func!r}")
    return fn


def build_parts(
    names: list[str], part_config: dict[str, dict[str, Any]], ctx: TrainContext
) -> list[MethodPart]:
    """Build each named part with its own options ``part_config.get(name, {})``."""
    return [build_fn(n)(dict(part_config.get(n) or {}), ctx) for n in names]


__all__ = [
    "METHOD_PARTS",
    "Batch",
    "CaseData",
    "MethodError",
    "MethodPart",
    "PartBase",
    "StudentOutput",
    "TrainContext",
    "build_fn",
    "build_parts",
    "parse_method",
]
