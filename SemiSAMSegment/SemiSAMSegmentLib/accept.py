"""Accept for SemiSAMSegment's Logic: the segmentation on the volume's grid -> one case of the store.

Segments map to the store's label table **by name** (segment "lesion" -> the store's label named
"lesion"). A new store is created with the segments' names as labels 1, 2, ... in segment order; a
segment name the existing store does not know yet is declared as the next free value (logged), so the
store's table only grows and never renames. Provenance is filled from the case's
:class:`~SemiSAMSegmentLib.session.SegmentSession` where the caller left a field empty: start time, end
time (now), prompts by kind, the model version that proposed the mask, and the proposal's Dice against
the accepted mask (computed by the store from the kept proposal). No qt, no ``slicer.app``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semisam.store import LabeledStore, Provenance
from semisam.store.labeled import STORE_FILE

from . import mrml_io
from .session import SegmentSession, now_utc
from .texts import _

log = logging.getLogger(__name__)

TOOL = "SemiSAMSegment"


def as_provenance(provenance: Provenance | Mapping[str, Any] | None) -> Provenance:
    """A :class:`~semisam.store.Provenance` from one, from a dict of its fields, or empty."""
    if provenance is None:
        return Provenance()
    if isinstance(provenance, Provenance):
        return dataclasses.replace(provenance)
    unknown = set(provenance) - {f.name for f in dataclasses.fields(Provenance)}
    if unknown:
        raise ValueError(f"provenance: unknown field(s) {sorted(unknown)}")
    return Provenance(**dict(provenance))


def fill_provenance(provenance: Provenance, session: SegmentSession | None) -> Provenance:
    """Fields left empty by the caller, taken from the session (see the module docstring)."""
    p = dataclasses.replace(provenance)
    if session is not None:
        p.started = p.started or session.started.isoformat()
        p.prompts = p.prompts or dict(session.prompt_kinds)
        p.model_version = p.model_version or session.proposal_version
    p.finished = p.finished or now_utc().isoformat()
    p.tool = p.tool or TOOL
    return Provenance(**dataclasses.asdict(p))  # re-validates (times in order, counts >= 0)


def open_store_for(
    store_dir: str | Path, names: Sequence[str], modality: str | None
) -> tuple[LabeledStore, dict[str, int]]:
    """Open (or create) the store and return it with ``segment name -> label value``."""
    root = Path(store_dir).expanduser()
    if not (root / STORE_FILE).is_file():
        store = LabeledStore.create(root, {i + 1: n for i, n in enumerate(names)}, modality=modality)
    else:
        store = LabeledStore(root)
    by_name = {name: value for value, name in store.labels.items() if value > 0}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        start = max(store.labels) + 1
        new = {start + i: n for i, n in enumerate(unknown)}
        store.declare_labels(new)
        log.info("store %s: declared new label(s) %s", root, new)
        by_name.update({n: v for v, n in new.items()})
    return store, {n: by_name[n] for n in names}


def accept_case(
    volume_node,
    segmentation_node,
    store_dir: str | Path,
    provenance: Provenance | Mapping[str, Any] | None,
    session: SegmentSession | None,
    segment_ids: Sequence[str] | None = None,
):
    """Store the volume and its segments as a labeled case; returns the store's ``CaseRecord``.

    Raises:
        ValueError: no store folder, no segments, an unknown segment id, duplicate segment names, or
            bad provenance.
        semisam.store.StoreError: the store refuses the case (its message names the store).
    """
    if not store_dir:
        raise ValueError("choose a store folder to accept the case into")
    ids = list(segment_ids) if segment_ids is not None else mrml_io.segment_ids(segmentation_node)
    if not ids:
        raise ValueError(f"segmentation {segmentation_node.GetName()!r} has no segments to accept")
    seg = segmentation_node.GetSegmentation()
    unknown = [s for s in ids if seg.GetSegment(s) is None]
    if unknown:
        raise ValueError(
            f"segmentation {segmentation_node.GetName()!r} has no segment with id {', '.join(unknown)} "
            f"(it has {', '.join(mrml_io.segment_ids(segmentation_node)) or 'none'})"
        )
    names = [seg.GetSegment(s).GetName() for s in ids]
    if len(set(names)) != len(names):
        raise ValueError(f"segment names must be distinct to map to store labels, got {names}")
    prov = fill_provenance(as_provenance(provenance), session)
    volume = session.volume if session is not None else mrml_io.volume_from_node(volume_node)
    store, values = open_store_for(store_dir, names, session.modality if session else None)
    exported = mrml_io.export_mask(segmentation_node, volume_node, ids)  # label n = n-th segment
    lut = np.zeros(len(ids) + 1, dtype=np.uint16)
    lut[1:] = [values[n] for n in names]
    mask = lut[exported]
    mask = mask.astype(np.uint8) if mask.max(initial=0) <= 255 else mask
    proposal = session.proposal if session is not None else None
    if proposal is not None and proposal.shape != mask.shape:
        proposal = None
    record = store.add_case(volume, mask, prov, proposal=proposal)
    log.info("accepted case %s into %s (%s)", record.case_id, store.root, record.split)
    return record


def validation_notice(store_dir: str | Path) -> str | None:
    """A message when the store's next accepted case will join its validation split, else ``None``.

    Validation cases judge new model versions; one corrected from the specialist's proposal keeps that
    model's answer wherever it was accepted and favours it, so such cases are left out of the comparison
    when blind ones exist (``semisam.training.promote``). ``None`` also when the folder holds no store yet
    (its first cases all train).
    """
    root = Path(store_dir).expanduser() if store_dir else None
    if root is None or not (root / STORE_FILE).is_file():
        return None
    if LabeledStore(root).next_split() != "validation":
        return None
    return _(
        "The next accepted case joins the validation set, which judges new model versions: draw it "
        "without Auto-segment (a corrected proposal favours the model that made it)."
    )
