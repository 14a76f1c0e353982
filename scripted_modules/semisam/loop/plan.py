"""A simulation's plan (``simulation.json``): the case order and the options it runs with, so that a
killed run resumes as it started, or is refused with the options that differ."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from semisam.fileio import atomic_write_json

#: Annotator options added after simulations were first saved, and how a saved plan without one ran (so
#: an older work folder resumes with the behaviour it started with, e.g. ``--no-slice-after-undo``).
LEGACY_ANNOTATOR: dict[str, Any] = {"slice_after_undo": False, "islands": False}
#: The same for the time model: a saved plan without ``touch_up_min`` priced every hand slice in full (one
#: without ``island_s`` removed no islands: the price it gets changes nothing).
LEGACY_TIME_MODEL: dict[str, Any] = {"touch_up_min": 1.0, "island_s": 2.0}


def option_differences(saved: Any, given: dict[str, Any], prefix: str = "") -> list[str]:
    """``"name: saved X, given Y"`` for every option (nested dicts by dotted name, e.g.
    ``annotator.slice_after_undo``) whose saved value differs from the given one."""
    if not isinstance(saved, dict):
        return [f"{prefix or 'options'}: saved {saved!r}, given {given!r}"]
    out = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += option_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, given {b!r}")
    return out


def check_work_folder(work: Path) -> None:
    """Refuse a work folder that is a file, or lies under a file, before anything is read or written.

    Raises:
        ValueError: one line naming the file (``mkdir`` would only say ``[Errno 17] File exists``).
    """
    for p in (work, *work.parents):
        if p.exists() and not p.is_dir():
            what = "is a file" if p == work else f"lies inside {p}, which is a file"
            raise ValueError(
                f"work folder {work}: {what}, not a folder; choose a folder for the store and the results "
                "(it is created if missing)"
            )


def read_plan(path: Path, known: set[str]) -> dict:
    """``simulation.json`` as written by an earlier run; raises ``ValueError`` naming the file when it is
    damaged (unreadable JSON, no case order, cases not in ``known``, the dataset's case ids)."""
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(
            f"{path}: damaged ({exc}); choose another --work folder or remove this one"
        ) from None
    order = plan.get("order") if isinstance(plan, dict) else None
    if (
        not isinstance(order, list)
        or not all(isinstance(c, str) and c in known for c in order)
        or len(set(order)) != len(order)
    ):
        raise ValueError(
            f"{path}: damaged (no case order of this dataset); choose another --work folder or remove this one"
        )
    return plan


def plan_order(
    path: Path,
    dataset: str,
    label: int,
    options: dict[str, Any],
    known: set[str],
    new_order: Callable[[], list[str]],
) -> list[str]:
    """The case order of the plan at ``path``: checked against ``dataset``, ``label`` and ``options`` on a
    resume (older plans read with :data:`LEGACY_ANNOTATOR` / :data:`LEGACY_TIME_MODEL`), else
    ``new_order()`` written there with them."""
    if path.is_file():
        plan = read_plan(path, known)
        saved = plan.get("options")
        if isinstance(saved, dict) and isinstance(saved.get("annotator"), dict):
            plan["options"] = saved = {**saved, "annotator": {**LEGACY_ANNOTATOR, **saved["annotator"]}}
        if isinstance(saved, dict) and isinstance(saved.get("time_model"), dict):
            plan["options"] = {**saved, "time_model": {**LEGACY_TIME_MODEL, **saved["time_model"]}}
        for key, value in (("dataset", dataset), ("label", label)):
            if plan.get(key) != value:
                raise ValueError(
                    f"{path}: this work folder holds a simulation with {key} {plan.get(key)!r}, not "
                    f"{value!r}; resume it with the same options or choose another --work folder"
                )
        differ = option_differences(plan.get("options"), options)
        if differ:
            raise ValueError(
                f"{path}: this work folder holds a simulation with other options: {'; '.join(differ)}; "
                "resume it with the same options or choose another --work folder"
            )
        return list(plan["order"])
    order = new_order()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "kind": "semisam-simulation",
            "dataset": dataset,
            "label": label,
            "order": order,
            "options": options,
            "created": dt.datetime.now(dt.UTC).isoformat(),
        },
    )
    return order
