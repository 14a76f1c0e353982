"""The explicit state SemiSAMSegment's Logic keeps for one case (one input volume) between button presses.

One :class:`SegmentSession` per input volume node, from the first action on it (auto-segment or
propagate) until *Accept* stores the case. It holds what provenance needs (start time, prompts used,
the proposal and the model version that made it) and the propagation session of the core
(:class:`semisam.propagation.PropagationState`), so that adding a prompt re-propagates only the range
it affects. No qt, no ``slicer.app``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semisam.prompts import Prompt
from semisam.scan.volume import Volume

from . import mrml_io


def volume_key(volume_node) -> tuple[str, int]:
    """``(node ID, image-data modified time)``: changes when the voxels are replaced or edited."""
    image = volume_node.GetImageData()
    return (volume_node.GetID(), int(image.GetMTime()) if image is not None else -1)


def now_utc() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


@dataclass
class SegmentSession:
    """One case in progress.

    Attributes:
        key: :func:`volume_key` of the volume node the session belongs to.
        volume: the scan as a :class:`semisam.scan.volume.Volume` (voxels ``(Z, Y, X)`` = Slicer's
            ``[k, j, i]``).
        started: when work on the case began (UTC).
        proposal: the specialist's label map ``(Z, Y, X)`` from *Auto-segment*, kept for the proposal Dice.
        proposal_version: the model version that made it (store version ``v0003``, or ``folder:<path>``).
        modality: from the specialist's manifest, when known.
        editing: the core's editing session (:class:`semisam.propagation.session.EditingSession`: the
            prompts, their propagation state, the ranges written), ``None`` before the first *Propagate*.
        state_key: ``(generalist, checkpoint, window, axis, device)`` the editing session was built for.
        prompt_kinds: every distinct prompt used on this case, by kind (``box``, ``point+``, ``point-``).
        written: axis -> segment name -> inclusive slice range propagation last wrote there (shared with
            the editing session of that axis, so a new generalist or window keeps it).
        review_order: slice indices ``k``, most uncertain first, from *Auto-segment*.
    """

    key: tuple[str, int]
    volume: Volume
    started: _dt.datetime = field(default_factory=now_utc)
    proposal: np.ndarray | None = None
    proposal_version: str | None = None
    modality: str | None = None
    editing: Any = None
    state_key: tuple | None = None
    prompt_kinds: Counter = field(default_factory=Counter)
    written: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    review_order: list[int] = field(default_factory=list)
    _seen: set[Prompt] = field(default_factory=set)

    @classmethod
    def for_node(cls, volume_node) -> SegmentSession:
        return cls(key=volume_key(volume_node), volume=mrml_io.volume_from_node(volume_node))

    @property
    def state(self):
        """The editing session's propagation state (``None`` before the first *Propagate*)."""
        return None if self.editing is None else self.editing.state

    def count_prompts(self, prompts: list[Prompt]) -> None:
        """Record prompts for provenance; a prompt counts once however often it is re-propagated."""
        for p in prompts:
            if p not in self._seen:
                self._seen.add(p)
                self.prompt_kinds["box" if p.box else ("point+" if p.positive else "point-")] += 1


@dataclass(frozen=True)
class VolumeSnapshot:
    """What the main thread reads of a volume node for a case set up on another thread: cheap reads only.

    Attributes:
        node_id: the node's ID (the Logic's key for the case).
        key: :func:`volume_key` at the time of reading.
        view: the node's voxels as a read-only view (no copy) with its geometry; it keeps the voxel buffer
            alive even when the node's image data is replaced meanwhile (the case is then stale by its
            key, and the main thread starts a new one at its next action).
    """

    node_id: str
    key: tuple[str, int]
    view: Volume

    @classmethod
    def of(cls, volume_node) -> VolumeSnapshot:
        """Main thread: identity, key and voxel view of ``volume_node`` (raises ``MrmlIOError`` without
        image data)."""
        view = mrml_io.volume_from_node(volume_node, copy=False)
        return cls(volume_node.GetID(), volume_key(volume_node), view)

    def session(self) -> SegmentSession:
        """A new case on a copy of the voxels (any thread: the copy is the expensive part)."""
        return SegmentSession(
            key=self.key, volume=dataclasses.replace(self.view, array=self.view.array.copy())
        )
