"""SemiSAMTrain's Logic against a real temporary store: counts, the model-versions table, promote and
rollback through ``semisam.store.ModelRegistry`` (the module file imported headless, as in Slicer)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="the slicer-core wheel (Slicer's MRML in Python) is needed")

REPO = Path(__file__).resolve().parents[2]
for _module_dir in ("SemiSAMSegment", "SemiSAMTrain"):
    sys.path.insert(0, str(REPO / _module_dir))

from semisam.scan.volume import Volume  # noqa: E402
from semisam.store import LabeledStore, RegistryError, StoreNotFoundError  # noqa: E402

train_module = importlib.import_module("SemiSAMTrain")


def model_dir(path: Path, seed: int) -> Path:
    """A specialist folder as ``semisam model init`` writes it (tiny, untrained, seeded)."""
    import torch

    from semisam.model_folder import new_manifest, save_model
    from semisam.specialists import build_specialist

    manifest = new_manifest("mamba_unet", ["lesion"], "CT", kwargs={"channels": [8, 16, 16, 32, 32]})
    torch.manual_seed(seed)
    save_model(path, build_specialist(manifest.arch, **manifest.kwargs), manifest)
    return path


@pytest.fixture
def store(tmp_path):
    """A store with 6 labeled cases (the split rule puts some in validation), 1 unlabeled scan and two
    registered model versions."""
    s = LabeledStore.create(tmp_path / "store", {1: "lesion"}, modality="CT")
    rng = np.random.default_rng(0)
    for _ in range(6):
        image = Volume(rng.normal(size=(4, 6, 5)).astype(np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
        mask = np.zeros(image.shape, np.uint8)
        mask[1:3, 2:4, 1:3] = 1
        s.add_case(image, mask)
    s.add_unlabeled(Volume(np.zeros((4, 6, 5), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0)))
    s.models.add(model_dir(tmp_path / "m1", 1))
    s.models.add(model_dir(tmp_path / "m2", 2))
    return s


def test_summary_and_model_rows(store):
    logic = train_module.SemiSAMTrainLogic()
    folder = str(store.root)
    summary = logic.storeSummary(folder)
    n_val = len(store.validation_ids())
    assert summary == {
        "name": "store",
        "labels": {1: "lesion"},
        "labeled": 6,
        "train": 6 - n_val,
        "validation": n_val,
        "unlabeled": 1,
        "versions": 2,
        "active": None,
    }
    assert 0 < n_val < 6
    assert logic.describeSummary(summary).startswith(
        f"6 labeled case(s) ({6 - n_val} train, {n_val} validation), 1 unlabeled; 2 model version(s), active: none"
    )
    rows = logic.modelRows(folder)
    assert [r["version"] for r in rows] == ["v0001", "v0002"]
    assert all(set(r) == set(train_module.MODEL_COLUMNS) for r in rows)
    assert rows[0]["arch"] == "mamba_unet" and rows[0]["dice"] == "" and rows[0]["active"] == ""


def test_promote_and_rollback(store):
    logic = train_module.SemiSAMTrainLogic()
    folder = str(store.root)
    assert logic.promote(folder, "v0001").version == "v0001"  # nothing active yet: no comparison
    assert store.models.active().version == "v0001"
    assert [r["active"] for r in logic.modelRows(folder)] == ["yes", ""]
    with pytest.raises(RegistryError, match="v0002 has no 'dice' on the validation split"):
        logic.promote(folder, "v0002")
    val = store.validation_ids()
    store.models.record_metrics("v0001", {"dice": 0.71}, val)
    store.models.record_metrics("v0002", {"dice": 0.64}, val)
    with pytest.raises(RegistryError, match="v0002 dice 0.6400 is not better than the active v0001's 0.7100"):
        logic.promote(folder, "v0002")
    assert store.models.active().version == "v0001"  # refused: nothing changed
    assert logic.promote(folder, "v0002", requireBetter=False).version == "v0002"
    rows = logic.modelRows(folder)
    assert rows[1]["active"] == "yes" and rows[1]["dice"] == "0.6400" and rows[1]["metrics"] == "dice=0.64"
    assert rows[1]["evaluated on"] == f"{len(val)} case(s)"
    assert logic.rollback(folder).version == "v0001"
    assert logic.storeSummary(folder)["active"] == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        logic.rollback(folder)


def test_a_folder_without_a_store_is_a_clear_error(tmp_path):
    logic = train_module.SemiSAMTrainLogic()
    with pytest.raises(StoreNotFoundError, match=r"not a SemiSAM store.*semisam store init"):
        logic.storeSummary(str(tmp_path))
    with pytest.raises(ValueError, match="Choose a store folder"):
        logic.modelRows("")
