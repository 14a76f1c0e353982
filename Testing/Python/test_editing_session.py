"""One editing session (semisam.propagation.session) for the user's Propagate and the simulated annotator:
both write the same mask for the same prompts (real LiteMedSAM weights, real slicer-core MRML, a lung1
crop), and the session's own rules hold (ranges per target, undo restores the range and the prompts)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from semisam.generalists import build_generalist
from semisam.loop.annotator import AnnotatorConfig, SimulatedAnnotator, structure_boxes
from semisam.metrics import dice
from semisam.propagation.session import EditingSession
from semisam.propagation.simulate import middle_slice

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def litemedsam():
    return build_generalist("litemedsam", device="cpu")


@pytest.fixture(scope="module")
def case(lung1):
    sys.path.insert(0, str(REPO / "SemiSAMSegment"))
    from SemiSAMSegmentLib.selftest import lesion_crop

    crop, label = lesion_crop(lung1)
    return crop, (label > 0).astype(np.uint8)


def test_the_annotator_and_slicers_propagate_write_the_same_mask(mrml_scene, case, litemedsam):
    sys.path.insert(0, str(REPO / "SemiSAMSegment"))
    from SemiSAMSegmentLib import mrml_io
    from SemiSAMSegmentLib.selftest import roi_around

    segment_module = importlib.import_module("SemiSAMSegment")
    crop, truth = case
    key = middle_slice(truth)
    proposal = truth.copy()
    proposal[key] = 0  # a proposal that misses the middle slice: the annotator boxes it
    (box,) = structure_boxes(truth[key])
    # The annotator: exact boxes, one prompt, kept (no undo), stopping as soon as the Dice rose.
    cfg = AnnotatorConfig(jitter_px=0.0, budget=1, undo=False)
    target = dice(proposal, truth) + 1e-3
    sim = SimulatedAnnotator(litemedsam, cfg).annotate(
        crop, truth, target, np.random.default_rng(0), proposal
    )
    assert [(a.kind, a.slice) for a in sim.actions] == [("box", key)]
    assert sim.effort.hand_slices == 0 and sim.final_dice > dice(proposal, truth)
    # The user: the same proposal in a segment, the same box as an ROI, Propagate (defaults).
    node = mrml_io.node_from_volume(crop, mrml_scene, "lung1 crop")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    mrml_io.import_mask(proposal, node, seg, {1: "lesion"})
    roi = roi_around(mrml_scene, crop, box, key)
    logic = segment_module.SemiSAMSegmentLogic()  # builds its own LiteMedSAM (the same bundled weights)
    out = logic.propagate(node, seg, "lesion", roiNode=roi, device="cpu")
    written = mrml_io.export_mask(seg, node, [out.segment_id])
    assert out.key_slices == [key]
    assert np.array_equal(written, sim.mask), (int(written.sum()), int(sim.mask.sum()))


def test_ranges_are_per_target_and_undo_restores_range_and_prompts(case, litemedsam):
    crop, truth = case
    key = middle_slice(truth)
    (box,) = structure_boxes(truth[key])
    session = EditingSession(litemedsam, crop, "axial")
    session.add([session.prompt(key, box=box)])
    result = session.propagate()
    empty = np.zeros_like(truth)
    first = session.write(empty, result, target="lesion")
    lo, hi = first.range
    assert session.written == {"lesion": (lo, hi)} and first.replaced == list(range(lo, hi + 1))
    # Another target keeps its own range; undoing its write restores nothing of "lesion".
    second = session.write(empty, result, target="other")
    assert session.written == {"lesion": first.range, "other": second.range}
    session.undo()
    assert session.written == {"lesion": first.range}
    # Undo of the first write takes its prompt back: the state holds no prompt and the range is gone.
    assert session.undo() == [session.prompt(key, box=box)]
    assert session.applied == [] and session.written == {} and session.state.keys == {}
    # A written slice-only answer widens no later range.
    session.add([session.prompt(key, box=box)])
    only = session.write(empty, session.propagate(across_slices=False), across_slices=False, target="lesion")
    assert only.replaced == [key] and "lesion" not in session.written


def test_sync_adds_new_prompts_and_rebuilds_when_one_is_taken_back(case, litemedsam):
    crop, truth = case
    key = middle_slice(truth)
    (box,) = structure_boxes(truth[key])
    session = EditingSession(litemedsam, crop, "axial")
    a, b = session.prompt(key, box=box), session.prompt(key + 1, box=box)
    assert session.sync([a]) == (1, True)  # the first sync builds the state
    state = session.state
    assert session.sync([a, b]) == (1, False) and session.state is state
    assert session.sync([b]) == (1, True) and session.state is not state and session.applied == [b]
