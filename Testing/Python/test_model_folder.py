"""Specialist model folders (semisam.model_folder): safetensors + manifest, checksums, no pickles."""

from __future__ import annotations

import json
import os

import pytest
import torch

from semisam import model_folder as mf
from semisam.specialists import build_specialist

SMALL = {"channels": [8, 16, 16, 32, 32], "mamba_depth": 1}


@pytest.fixture()
def saved(tmp_path):
    man = mf.new_manifest("mamba_unet", ["lesion", "vessel"], "CT", kwargs=SMALL)
    torch.manual_seed(0)
    model = build_specialist(man.arch, **man.kwargs).eval()
    d = tmp_path / "model"
    out = mf.save_model(d, model, man)
    return d, model, out


def test_roundtrip_rebuilds_the_same_network(saved):
    d, model, man = saved
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert man.sha256 == mf.sha256_file(d / "weights.safetensors")
    data = json.loads((d / "manifest.json").read_text())
    for key in (
        "arch",
        "kwargs",
        "labels",
        "modality",
        "preprocessing",
        "created",
        "parent",
        "sha256",
        "training",
        "metrics",
        "format_version",
    ):
        assert key in data
    assert data["labels"] == {"lesion": 1, "vessel": 2} and data["kwargs"]["n_classes"] == 3
    assert set(data["preprocessing"]) >= {"target_spacing", "orientation", "intensity"}
    loaded, man2 = mf.load_model(d, "cpu")
    assert man2 == mf.read_manifest(d) == mf.verify_model_dir(d)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training


def test_tampered_weights_are_refused(saved):
    d, _, _ = saved
    w = d / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-5] ^= 0xFF  # flip one byte of tensor data: still parses as safetensors
    w.write_bytes(bytes(raw))
    with pytest.raises(mf.CheckpointError, match="sha256 .* does not match"):
        mf.load_model(d)
    with pytest.raises(mf.CheckpointError, match=str(w).replace("\\", "\\\\")):
        mf.verify_model_dir(d)


def test_pickle_as_weights_is_refused_without_unpickling(saved, tmp_path):
    d, model, _ = saved
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    w = d / "weights.safetensors"
    torch.save({"state": model.state_dict(), "x": Evil()}, w)  # a real torch.save zip pickle
    man = json.loads((d / "manifest.json").read_text())
    man["sha256"] = mf.sha256_file(w)  # even with a matching checksum
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(mf.CheckpointError, match="is a pickle"):
        mf.load_model(d)
    assert not marker.exists()
    # A legacy (non-zip) pickle too.
    torch.save(model.state_dict(), w, _use_new_zipfile_serialization=False)
    with pytest.raises(mf.CheckpointError, match="is a pickle"):
        mf.verify_model_dir(d)


def test_pt_file_instead_of_safetensors_is_named(saved):
    d, model, _ = saved
    os.remove(d / "weights.safetensors")
    torch.save(model.state_dict(), d / "weights.pt")
    with pytest.raises(
        mf.CheckpointError, match=r"missing \(found weights.pt: pickled weights are refused\)"
    ):
        mf.verify_model_dir(d)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("arch"), "missing field"),
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
        (lambda m: m.update(labels={"a": 0}), "label values must be distinct integers 1..255"),
        (lambda m: m["preprocessing"].update(target_spacing=[1, -1, 1]), "target_spacing"),
        (lambda m: m["preprocessing"]["intensity"].update(mode="zscore"), "intensity.mode"),
        (lambda m: m.update(arch="resnet"), "unknown specialist architecture"),
    ],
)
def test_bad_manifests_are_named(saved, edit, message):
    d, _, _ = saved
    data = json.loads((d / "manifest.json").read_text())
    edit(data)
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(mf.CheckpointError, match=message):
        mf.load_model(d)


def test_invalid_json_and_missing_dir(tmp_path, saved):
    d, _, _ = saved
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(mf.CheckpointError, match="not valid JSON"):
        mf.read_manifest(d)
    with pytest.raises(mf.CheckpointError, match="does not exist"):
        mf.read_manifest(tmp_path / "nowhere")


def test_save_is_atomic_and_never_clobbers(saved):
    d, model, man = saved
    before = (d / "weights.safetensors").read_bytes()
    with pytest.raises(mf.CheckpointError, match="already exists"):
        mf.save_model(d, model, man)
    assert (d / "weights.safetensors").read_bytes() == before

    class Boom(RuntimeError):
        pass

    class Broken(torch.nn.Module):
        def state_dict(self, *a, **k):
            raise Boom("disk full")

    with pytest.raises(Boom):
        mf.save_model(d, Broken(), man, overwrite=True)
    assert (d / "weights.safetensors").read_bytes() == before  # the old model survives a failed save
    assert sorted(p.name for p in d.parent.iterdir()) == ["model"]  # no temporary folders left
    torch.manual_seed(5)
    other = build_specialist(man.arch, **man.kwargs)
    new = mf.save_model(d, other, man, overwrite=True)
    assert new.sha256 != man.sha256 and mf.verify_model_dir(d).sha256 == new.sha256
    assert sorted(p.name for p in d.parent.iterdir()) == ["model"]
