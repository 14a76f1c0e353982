"""SemiSAMSegment's Propagate answers with the store's active adapted generalist (``semisam adapt``),
against the real slicer-core MRML and the real LiteMedSAM weights (a cropped lung1: 7 slices)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "SemiSAMSegment"))

from SemiSAMSegmentLib import mrml_io  # noqa: E402
from SemiSAMSegmentLib import propagate as propagate_lib  # noqa: E402
from SemiSAMSegmentLib.selftest import lesion_crop, middle_roi  # noqa: E402

from semisam.adapt.versions import GeneralistRegistry, base_digest, save_version  # noqa: E402
from semisam.generalists import SlicePrompt, build_generalist  # noqa: E402
from semisam.store import LabeledStore  # noqa: E402

segment_module = importlib.import_module("SemiSAMSegment")


def _version(store: LabeledStore, model, tmp: Path, name: str):
    """Register ``model``'s decoder as a generalist version of ``store`` and make it active."""
    folder = save_version(tmp / name, model, ["case_0001"], {}, base_digest(model))
    reg = GeneralistRegistry(store)
    return reg.promote(reg.add(folder).version, require_better=False)


def test_propagate_uses_the_stores_active_generalist_version(lung1, mrml_scene, tmp_path):
    crop, label = lesion_crop(lung1)
    node = mrml_io.node_from_volume(crop, mrml_scene, "lung1 crop")
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    key, roi = middle_roi(mrml_scene, crop, label)
    store = LabeledStore.create(tmp_path / "store", {1: "lesion"}, modality="CT")
    adapted = build_generalist("litemedsam", device="cpu")
    with torch.no_grad():  # a decoder that answers differently: its IoU head is shifted
        adapted.mask_decoder.iou_prediction_head.layers[-1].bias += 0.25
    rec = _version(store, adapted, tmp_path, "adapted")
    logic = segment_module.SemiSAMSegmentLogic()

    frozen = logic.preparePropagate(node, seg, "lesion", roiNode=roi, device="cpu")
    mine = logic.preparePropagate(node, seg, "lesion", roiNode=roi, device="cpu", storeFolder=str(store.root))
    assert frozen.generalist_version is None and mine.generalist_version == rec.version == "v0001"
    assert mine.model is not frozen.model and mine.state_key != frozen.state_key
    # the encoder is untouched: both share the embedding cache's entries
    assert mine.model.identity == frozen.model.identity and mine.cache is frozen.cache
    img = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    emb = frozen.model.encode(img)
    p = SlicePrompt(box=(20, 20, 40, 40))
    assert mine.model.predict(emb, p).score != pytest.approx(frozen.model.predict(emb, p).score)
    out = logic.applyPropagate(propagate_lib.compute(mine))
    assert out.key_slices == [key]

    # a version made for another LiteMedSAM checkpoint is refused before any work, naming it
    from tiny_generalists import tiny_litemedsam

    _version(store, tiny_litemedsam(), tmp_path, "other")
    with pytest.raises(ValueError, match="made for another litemedsam checkpoint"):
        logic.preparePropagate(node, seg, "lesion", roiNode=roi, device="cpu", storeFolder=str(store.root))
