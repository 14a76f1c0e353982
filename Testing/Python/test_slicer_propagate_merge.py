"""SemiSAMSegment's Propagate writes by the core's keep-agreeing rule (semisam.merge) unless the user turns
it off: real slicer-core MRML, the real LiteMedSAM weights, a lung1 crop.

The segment holds the propagation's own answer (so every slice agrees with a second, identical
propagation) except that the key slice is emptied (the bad slice) and one neighbouring slice is edited by
a pixel (a user's small edit that the new answer still agrees with). A box on the key slice must fix the
key slice and keep the edit; with the option off the edit is overwritten.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from SemiSAMSegmentLib import mrml_io  # noqa: E402
from SemiSAMSegmentLib.selftest import lesion_crop, middle_roi  # noqa: E402

segment_module = importlib.import_module("SemiSAMSegment")


def test_propagate_keeps_agreeing_slices_unless_told_to_replace(mrml_scene, lung1):
    crop, label = lesion_crop(lung1)
    node = mrml_io.node_from_volume(crop, mrml_scene, "lung1 crop")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    logic = segment_module.SemiSAMSegmentLogic()
    key, roi = middle_roi(mrml_scene, crop, label)

    first = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu")  # into an empty segment
    answer = mrml_io.export_mask(seg, node, [first.segment_id])
    lo, hi = first.slice_range
    assert first.replaced == list(range(lo, hi + 1))  # an empty segment gets the whole propagation
    near = next(s for s in (key - 1, key + 1) if lo <= s <= hi and answer[s].sum() > 20)

    edited = answer.copy()
    edited[key] = 0  # the bad slice
    j, i = np.argwhere(answer[near] > 0)[0]
    edited[near, j, i] = 0  # a one-voxel edit: still agrees (Dice > 0.95) with the same answer
    for keep in (True, False):
        mrml_io.import_mask(edited, node, seg, {1: "lesion"})
        out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu", keepAgreeingSlices=keep)
        after = mrml_io.export_mask(seg, node, [out.segment_id])
        assert out.slice_range == (lo, hi)
        assert np.array_equal(after[key], answer[key])  # the key slice is always replaced
        if keep:
            assert out.replaced == [key], out.replaced  # every other slice agrees: kept as it was
            assert np.array_equal(
                after, np.where(np.arange(len(after))[:, None, None] == key, answer, edited)
            )
            assert f"replaced in 1 of slices {lo}..{hi}" in out.describe("lesion")
        else:
            assert out.replaced == list(range(lo, hi + 1))
            assert np.array_equal(after, answer)  # the edit is overwritten

    # Propagate across slices off: the prompted slice alone is answered and written, whatever the
    # merge option; the rest of the segment (the edit included) stays as it was.
    mrml_io.import_mask(edited, node, seg, {1: "lesion"})
    out = logic.propagate(
        node, seg, "lesion", roiNode=roi, device="cpu", keepAgreeingSlices=False, propagateAcrossSlices=False
    )
    after = mrml_io.export_mask(seg, node, [out.segment_id])
    assert out.replaced == [key] and out.slices == [key] and out.stops == {}
    assert f"Answered the prompted axial slice(s) {key} only" in out.describe("lesion")
    assert np.array_equal(after, np.where(np.arange(len(after))[:, None, None] == key, answer, edited))


def test_the_option_is_a_typed_parameter_that_defaults_to_on():
    from SemiSAMLib import defaults

    assert defaults.DEFAULTS["keepAgreeingSlices"] is True
    assert segment_module.SemiSAMSegmentParameterNode.keepAgreeingSlices is True
    assert defaults.DEFAULTS["propagateAcrossSlices"] is True
    assert segment_module.SemiSAMSegmentParameterNode.propagateAcrossSlices is True
