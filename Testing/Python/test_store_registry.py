"""ModelRegistry: versions copied in atomically, metrics on the validation split, promote and rollback."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from semisam.store import LabeledStore, RegistryError


def make_model_dir(path, seed=0, parent=None):
    """A valid model folder per the checkpoint contract: manifest.json + weights.safetensors."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"conv.weight": rng.standard_normal((4, 1, 3, 3, 3)).astype(np.float32)}, path / "weights.safetensors"
    )
    digest = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    # The contract of semisam.model_folder (ModelManifest); written by hand so this needs no torch.
    manifest = {
        "format_version": 1,
        "arch": "unet3d",  # a registered name (registration refuses unknown ones); weights need not fit
        "kwargs": {"n_classes": 2, "channels": 4},
        "labels": {"lesion": 1},
        "modality": "CT",
        "preprocessing": {
            "target_spacing": [1.0, 1.0, 2.5],
            "orientation": "LPS",
            "intensity": {"mode": "ct", "window": [-1160, 340]},
        },
        "created": "2026-01-01T00:00:00+00:00",
        "parent": parent,
        "sha256": digest,
        "training": {},
        "metrics": {},
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture
def store(tmp_path):
    return LabeledStore.create(tmp_path / "store", {1: "lesion"})


def test_add_promote_rollback(store, tmp_path):
    reg = store.models
    assert reg.versions() == [] and reg.active() is None
    v1 = reg.add(make_model_dir(tmp_path / "m1", 1), metrics={"dice": 0.70}, evaluated_on=["c5"])
    v2 = reg.add(make_model_dir(tmp_path / "m2", 2, parent="v0001"))
    assert (v1.version, v2.version, v2.parent, v1.arch) == ("v0001", "v0002", "v0001", "unet3d")
    assert (v1.path / "weights.safetensors").read_bytes() == (
        tmp_path / "m1" / "weights.safetensors"
    ).read_bytes()
    assert reg.promote("v0001").version == "v0001" and reg.active_path() == v1.path
    with pytest.raises(RegistryError, match="v0002 has no 'dice'"):
        reg.promote("v0002")
    reg.record_metrics("v0002", {"dice": 0.65}, ["c5"])
    with pytest.raises(RegistryError, match="0.6500 is not better .* 0.7000; not promoted"):
        reg.promote("v0002")
    assert reg.active().version == "v0001"
    reg.record_metrics("v0002", {"dice": 0.75}, ["c5", "c10"])
    with pytest.raises(RegistryError, match="evaluate both on the current validation split"):
        reg.promote("v0002")
    reg.record_metrics("v0001", {"dice": 0.70}, ["c10", "c5"])
    assert reg.promote("v0002").metrics == {"dice": 0.75}
    assert LabeledStore(store.root).models.active().version == "v0002"  # seen by another reader
    assert reg.rollback().version == "v0001" and reg.active().version == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    reg.promote("v0002", require_better=False)
    log = json.loads((store.root / "models" / "active.json").read_text())["log"]
    assert [e["event"] for e in log] == ["promote", "promote", "rollback", "promote"]
    assert store.check() == []


def test_invalid_model_folders_are_refused(store, tmp_path):
    reg = store.models
    with pytest.raises(RegistryError, match="does not exist"):
        reg.add(tmp_path / "nope")
    bad = make_model_dir(tmp_path / "bad")
    (bad / "weights.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(RegistryError):  # sha256 mismatch (or the checkpoint module's own check)
        reg.add(bad)
    no_w = make_model_dir(tmp_path / "now")
    (no_w / "weights.safetensors").unlink()
    with pytest.raises(RegistryError):
        reg.add(no_w)
    with pytest.raises(RegistryError, match="no model version 'v0009'"):
        reg.promote("v0009")
    assert reg.versions() == [] and not list(store.root.joinpath("models").rglob(".*"))


def test_a_model_saved_by_semisam_checkpoints_registers_and_loads(store, tmp_path):
    """The contract end to end: save_model's folder goes in, the active folder loads back identically."""
    torch = pytest.importorskip("torch")
    mf = pytest.importorskip("semisam.model_folder")
    from semisam.specialists import build_specialist

    man = mf.new_manifest(
        "mamba_unet", ["lesion"], "CT", kwargs={"channels": [8, 16, 16, 32, 32], "mamba_depth": 1}
    )
    torch.manual_seed(0)
    model = build_specialist(man.arch, **man.kwargs).eval()
    mf.save_model(tmp_path / "trained", model, man)
    reg = store.models
    v = reg.add(tmp_path / "trained", metrics={"dice": 0.5})
    assert v.sha256 == mf.read_manifest(v.path).sha256 and v.arch == "mamba_unet"
    reg.promote(v.version)
    loaded, _ = mf.load_model(reg.active_path())
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # A folder whose weights were altered after saving is refused by the checkpoint module's check.
    (tmp_path / "trained" / "weights.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(RegistryError, match="not a valid model folder"):
        reg.add(tmp_path / "trained")
