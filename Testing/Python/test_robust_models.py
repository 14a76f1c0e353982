"""Hostile model files: hand-edited manifests (types and value ranges), crafted SAM checkpoints, random
bytes given as a checkpoint, pickles (whose refusal never repeats torch's weights_only=False advice),
and a truncated ONNX export in the cache (rebuilt, not fatal)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from robust_helpers import assert_one_line_error, run_cli, sha, small_scan
from tiny_generalists import tiny_sam

from semisam import model_folder as mf
from semisam.generalists.sam import build_sam
from semisam.generalists.user_checkpoint import CheckpointError, read_state_dict, save_state_dict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from semisam.specialists import build_specialist

    d = tmp_path_factory.mktemp("robust-models") / "m"
    man = mf.new_manifest("unet3d", ["lesion"], "CT", kwargs={"channels": [4, 8]}, target_spacing=(2, 2, 3))
    try:
        model = build_specialist(man.arch, **man.kwargs)
    except TypeError:  # other constructor arguments: the defaults
        man = mf.new_manifest("unet3d", ["lesion"], "CT", target_spacing=(2, 2, 3))
        model = build_specialist(man.arch, **man.kwargs)
    mf.save_model(d, model, man)
    return d


def _edited(model_dir, tmp_path, edit):
    import shutil

    d = tmp_path / "edited"
    shutil.copytree(model_dir, d)
    data = json.loads((d / "manifest.json").read_text())
    edit(data)
    (d / "manifest.json").write_text(json.dumps(data))
    return d


MANIFEST_DAMAGE = {
    "intensity list": (lambda m: m["preprocessing"].update(intensity=[1, 2]), "preprocessing.intensity"),
    "inference list": (lambda m: m.update(inference=[]), "inference: expected an object"),
    "inference.mode unknown": (lambda m: m.update(inference={"mode": "OOM"}), "inference.mode"),
    "window abc": (lambda m: m["preprocessing"]["intensity"].update(window="abc"), "window"),
    "window inverted": (lambda m: m["preprocessing"]["intensity"].update(window=[100, -100]), "low < high"),
    "target_spacing 0.01": (
        lambda m: m["preprocessing"].update(target_spacing=[0.01, 0.01, 0.01]),
        "target_spacing[",
    ),
    "target_spacing 1e6": (lambda m: m["preprocessing"].update(target_spacing=[1e6, 1, 1]), "0.1..50 mm"),
    "overlap 1": (lambda m: m.update(inference={"overlap": 1.0}), "inference.overlap"),
    "roi_size 0": (lambda m: m.update(inference={"roi_size": [0, 64, 64]}), "inference.roi_size[0]"),
    "sw_batch_size 0": (lambda m: m.update(inference={"sw_batch_size": 0}), "inference.sw_batch_size"),
    "kwargs unknown": (lambda m: m["kwargs"].update(no_such_argument=3), "manifest.json"),
    "n_classes text": (lambda m: m["kwargs"].update(n_classes="two"), "n_classes"),
    "labels list": (lambda m: m.update(labels=["lesion"]), "labels: expected an object"),
}


@pytest.mark.parametrize("damage", sorted(MANIFEST_DAMAGE))
def test_hand_edited_manifest_is_one_line_naming_the_field(model_dir, tmp_path, capsys, damage):
    edit, needle = MANIFEST_DAMAGE[damage]
    d = _edited(model_dir, tmp_path, edit)
    scan = small_scan(tmp_path)
    before = sha(scan), sha(d / "manifest.json")
    code, _, err = run_cli(capsys, ["segment", scan, "--model", d, "--output", tmp_path / "m.nii.gz"])
    assert_one_line_error(code, err, "manifest.json", needle)
    assert (sha(scan), sha(d / "manifest.json")) == before
    assert not (tmp_path / "m.nii.gz").exists()


# ----------------------------------------------------------------------------------------- generalists
@pytest.fixture(scope="module")
def sam_state():
    return {k: v.clone() for k, v in tiny_sam(seed=1).state_dict().items()}


def _crafted(state, tmp_path, name, edit):
    s = dict(state)
    edit(s)
    return save_state_dict(s, tmp_path / f"{name}.safetensors")


def test_crafted_sam_checkpoints_are_checkpoint_errors(sam_state, tmp_path):
    def zero_rel_pos(s):
        for k in [k for k in s if k.endswith("attn.rel_pos_h") or k.endswith("attn.rel_pos_w")]:
            s[k] = torch.zeros((s[k].shape[0], 0))

    def zero_mlp(s):
        for k in [k for k in s if ".mlp.lin1." in k and k.startswith("image_encoder")]:
            s[k] = torch.zeros((0, *s[k].shape[1:]))

    for name, edit in {"rel_pos": zero_rel_pos, "mlp": zero_mlp}.items():
        path = _crafted(sam_state, tmp_path, name, edit)
        with pytest.raises(CheckpointError, match=rf"{name}\.safetensors: not a SAM ViT checkpoint"):
            build_sam(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "random.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="random.pth: not a checkpoint") as info:
        read_state_dict(path)
    assert "pickled" not in str(info.value)
    scan = small_scan(tmp_path)
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": [{"slice": 3, "box": [4, 4, 11, 11]}]}))
    code, _, err = run_cli(
        capsys,
        [
            "propagate",
            scan,
            "--prompts",
            prompts,
            "--output",
            tmp_path / "m.nii.gz",
            "--model",
            f"sam:{path}",
        ],
    )
    assert_one_line_error(code, err, "random.pth: not a checkpoint")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refused_pickles_never_suggest_weights_only_false(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"pickled Python objects \((builtins\.)?print\)") as info:
        read_state_dict(path)
    assert "weights_only" not in str(info.value) and "must never run" not in capsys.readouterr().out
    truncated = tmp_path / "cut.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable") as info:
        read_state_dict(truncated)
    assert "weights_only" not in str(info.value)


def test_truncated_onnx_export_in_the_cache_is_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from semisam.generalists.fast_encoder import apply_backend

    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(tmp_path))
    image = np.random.default_rng(0).uniform(0, 1, (40, 56)).astype(np.float32)
    model = tiny_sam(seed=3)
    apply_backend(model, "onnxruntime")
    reference = model.encode(image).features
    exports = sorted((tmp_path / "onnx").iterdir())
    assert exports
    for p in exports:  # a full disk or a killed copy left half files
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    again = tiny_sam(seed=3)
    apply_backend(again, "onnxruntime")
    assert torch.allclose(again.encode(image).features, reference, atol=1e-5)
    assert all(p.stat().st_size > 0 for p in exports)
