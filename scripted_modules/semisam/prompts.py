"""The one prompt form shared by the CLI, the tests and the Slicer modules: boxes and +/- points on slices.

JSON form (voxel coordinates of the image)::

    {"axis": "axial",
     "prompts": [{"slice": 32, "box": [i0, j0, i1, j1]},
                 {"slice": 40, "point": [i, j], "positive": false}]}

``axis`` names the voxel axis the slices are taken across; ``slice`` is the index along it. Inside a slice
a prompt gives ``(column, row)`` of the 2D slice array returned by :func:`semisam.slices.take_slice`:

============  =======================  =====================  ==========================
axis          slice index              column (box x, 1st)    row (box y, 2nd)
============  =======================  =====================  ==========================
``axial``     ``k`` (file's 3rd axis)  ``i``                  ``j``
``coronal``   ``j`` (2nd axis)         ``i``                  ``k``
``sagittal``  ``i`` (1st axis)         ``j``                  ``k``
============  =======================  =====================  ==========================

So for the usual axial case ``box = [i0, j0, i1, j1]`` and ``point = [i, j]``, as in Slicer's IJK indices.
Boxes are inclusive voxel corners (``i0 <= i1``, ``j0 <= j1``); a box one voxel wide is allowed, an
inverted one is not. ``positive`` defaults to ``true``.

Every problem raises :class:`PromptError` (a ``ValueError``) whose message names the file, the prompt
index and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semisam.slices import AXES, n_slices, slice_shape


class PromptError(ValueError):
    """A prompt (or prompts file) is malformed or does not fit the image."""


@dataclass(frozen=True)
class Prompt:
    """One prompt on one slice, in slice pixel coordinates ``(column, row)`` (see the module docstring).

    Attributes:
        slice: index along the axis.
        box: ``(x0, y0, x1, y1)`` inclusive corners, or ``None``.
        point: ``(x, y)``, or ``None``.
        positive: for points: ``True`` = on the structure, ``False`` = not on it.
    """

    slice: int
    box: tuple[int, int, int, int] | None = None
    point: tuple[int, int] | None = None
    positive: bool = True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"slice": self.slice}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.point is not None:
            out["point"] = list(self.point)
            out["positive"] = self.positive
        return out


@dataclass(frozen=True)
class PromptSet:
    """All prompts of one request: an axis and a list of :class:`Prompt`."""

    axis: str
    prompts: tuple[Prompt, ...]

    @property
    def axis_index(self) -> int:
        return AXES[self.axis]

    def slices(self) -> list[int]:
        """Prompted slice indices, sorted, unique."""
        return sorted({p.slice for p in self.prompts})

    def to_json(self) -> dict[str, Any]:
        return {"axis": self.axis, "prompts": [p.to_json() for p in self.prompts]}


# ------------------------------------------------------------------------------------------ parsing
def _int(value: Any, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise PromptError(f"{where}: {what} must be an integer voxel index, got {value!r}")
    return int(value)


def _ints(value: Any, n: int, what: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise PromptError(f"{where}: {what} must be a list of {n} integers, got {value!r}")
    return tuple(_int(v, what, where) for v in value)


def parse_prompts(
    data: dict[str, Any], shape_zyx: tuple[int, int, int] | None = None, source: str | None = None
) -> PromptSet:
    """Validate the JSON form (already decoded) and return a :class:`PromptSet`.

    Args:
        data: the decoded JSON object.
        shape_zyx: the image's ``(Z, Y, X)``; when given, every prompt must lie inside the image.
        source: file name for messages.

    Raises:
        PromptError: naming ``source``, the prompt index and the problem.
    """
    pre = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise PromptError(f"{pre}expected a JSON object with 'axis' and 'prompts', got {type(data).__name__}")
    unknown = set(data) - {"axis", "prompts"}
    if unknown:
        raise PromptError(f"{pre}unknown key(s) {sorted(unknown)}; expected 'axis' and 'prompts'")
    axis = data.get("axis", "axial")
    if not isinstance(axis, str) or axis.lower() not in AXES:
        raise PromptError(f"{pre}unknown axis {axis!r}; use one of {', '.join(AXES)}")
    axis = axis.lower()
    items = data.get("prompts")
    if not isinstance(items, list) or not items:
        raise PromptError(f"{pre}'prompts' must be a non-empty list")
    out = [_parse_one(item, n, axis, shape_zyx, pre) for n, item in enumerate(items)]
    return PromptSet(axis=axis, prompts=tuple(out))


def _parse_one(item: Any, n: int, axis: str, shape_zyx: tuple[int, int, int] | None, pre: str) -> Prompt:
    where = f"{pre}prompt {n}"
    if not isinstance(item, dict):
        raise PromptError(f"{where}: expected an object, got {item!r}")
    unknown = set(item) - {"slice", "box", "point", "positive"}
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {sorted(unknown)}")
    if "slice" not in item:
        raise PromptError(f"{where}: 'slice' is missing")
    has_box, has_point = "box" in item, "point" in item
    if has_box == has_point:
        raise PromptError(f"{where}: give exactly one of 'box' or 'point'")
    s = _int(item["slice"], "'slice'", where)
    positive = item.get("positive", True)
    if not isinstance(positive, bool):
        raise PromptError(f"{where}: 'positive' must be true or false, got {positive!r}")
    if has_box and not positive:
        raise PromptError(
            f"{where}: a box always marks the structure; 'positive': false applies to points only"
        )
    box = point = None
    if has_box:
        box = _ints(item["box"], 4, "'box'", where)
        if box[2] < box[0] or box[3] < box[1]:
            raise PromptError(f"{where}: box {list(box)} is empty or inverted (need x0 <= x1 and y0 <= y1)")
    else:
        point = _ints(item["point"], 2, "'point'", where)
    if shape_zyx is not None:
        ns = n_slices(shape_zyx, axis)
        rows, cols = slice_shape(shape_zyx, axis)
        if not 0 <= s < ns:
            raise PromptError(f"{where}: slice {s} is outside the image (0..{ns - 1} along {axis})")
        xs = (box[0], box[2]) if box else (point[0],)  # type: ignore[index]
        ys = (box[1], box[3]) if box else (point[1],)  # type: ignore[index]
        if min(xs) < 0 or max(xs) >= cols or min(ys) < 0 or max(ys) >= rows:
            what = f"box {list(box)}" if box else f"point {list(point)}"  # type: ignore[arg-type]
            raise PromptError(
                f"{where}: {what} is outside the {axis} slice (columns 0..{cols - 1}, rows 0..{rows - 1})"
            )
    return Prompt(slice=s, box=box, point=point, positive=positive)  # type: ignore[arg-type]


def load_prompts(path: str | os.PathLike, shape_zyx: tuple[int, int, int] | None = None) -> PromptSet:
    """Read and validate a prompts JSON file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise PromptError(f"{p}: prompts file not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # Recursion: absurd nesting
        raise PromptError(f"{p}: not valid JSON: {exc}") from exc
    return parse_prompts(data, shape_zyx, source=str(p))


def make_prompt(
    axis: str,
    shape: tuple[int, int, int],
    slice_index: int,
    box: tuple[int, int, int, int] | None = None,
    point: tuple[int, int] | None = None,
    positive: bool = True,
) -> Prompt:
    """One validated :class:`Prompt` on ``axis`` of a volume of ``shape`` ``(Z, Y, X)`` (slice pixel
    coordinates ``(column, row)``); raises :class:`PromptError` for a slice, box or point outside it."""
    item: dict[str, Any] = {"slice": int(slice_index)}
    if box is not None:
        item["box"] = [int(v) for v in box]
    if point is not None:
        item["point"] = [int(v) for v in point]
        item["positive"] = bool(positive)
    return parse_prompts({"axis": axis, "prompts": [item]}, shape).prompts[0]
