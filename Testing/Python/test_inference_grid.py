"""segment(): outputs land exactly on the input grid (anisotropic, rotated/flipped, shifted scans),
objects are found where they are, results are deterministic, uncertainty ranks slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from semisam import model_folder as mf
from semisam.inference import orientation_axes, segment, to_input_grid, to_model_grid
from semisam.scan.volume import Volume, read_volume
from semisam.specialists import SPECIALIST_REGISTRY


class Threshold(nn.Module):
    """Logit of 'object' = gain * (normalised intensity - 0.5): a specialist whose weights threshold at 0 HU.

    ``input_kind`` 2.5d: ``(B, 3, H, W) -> (B, 2, H, W)`` from the centre slice; 3d: ``(B, 1, D, H, W)``.
    """

    def __init__(self, kind: str = "2.5d", n_classes: int = 2):
        super().__init__()
        self.input_kind = kind
        self.in_slices = 3 if kind == "2.5d" else 1
        self.n_classes = n_classes
        self.gain = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        c = x[:, 1:2] if self.input_kind == "2.5d" else x
        fg = self.gain * (c - 0.5)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


#: Voxel axes permuted (i -> A, j -> S, k -> R), flipped, and tilted by 10 degrees about S.
ODD_DIRECTION = _rotation(10) @ np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]], dtype=float)


def _phantom(direction=ODD_DIRECTION, spacing=(0.7, 1.9, 1.3), origin=(-123.4, 56.7, 890.1)):
    """(Z, Y, X) = (24, 30, 40) CT: -500 HU background, +500 HU box at k 6:18, j 5:20, i 12:31."""
    a = np.full((24, 30, 40), -500, dtype=np.int16)
    a[6:18, 5:20, 12:31] = 500
    return Volume(a, spacing=spacing, origin=origin, direction=direction)


def _manifest(target=(1.0, 1.0, 1.0), modality="CT", orientation="LPS") -> mf.ModelManifest:
    man = mf.new_manifest("threshold", ["object"], modality, target_spacing=target)
    man.preprocessing["orientation"] = orientation
    return man


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


#: The phantom's own spacing in the model's LPS frame: new i = old k (R/L), j = old i (A/P), k = old j.
NATIVE_LPS = (1.3, 0.7, 1.9)


@pytest.mark.parametrize("kind", ["2.5d", "3d"])
@pytest.mark.parametrize("target", [(1.0, 1.0, 1.0), NATIVE_LPS, (2.1, 0.6, 1.6)])
def test_output_lands_on_the_input_grid_and_finds_the_object(kind, target):
    vol = _phantom()
    man = _manifest(target)
    if kind == "3d":
        man.inference = {"roi_size": [16, 16, 16], "overlap": 0.25}
    res = segment(vol, Threshold(kind), man, "cpu")
    assert res.labels.shape == vol.shape and res.labels.dtype == np.uint8
    assert res.label_volume().same_grid(vol)
    truth = vol.array > 0
    assert set(np.unique(res.labels)) == {0, 1}
    # Resampling moves boundaries by at most about a voxel: the box (12 x 15 x 19 voxels) must match.
    assert _dice(res.labels == 1, truth) > 0.9
    assert res.labels[12, 12, 21] == 1 and res.labels[1, 1, 1] == 0 and res.labels[20, 25, 5] == 0
    if target == NATIVE_LPS:
        # No resampling needed (only orientation): the round trip is exact.
        np.testing.assert_array_equal(res.labels, truth.astype(np.uint8))


def test_grid_roundtrip_is_exact_for_labels_at_native_spacing():
    vol = _phantom()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=vol.shape).astype(np.uint8)
    lab_vol = vol.with_array(labels)
    pre = _manifest(NATIVE_LPS).preprocessing
    x, grid = to_model_grid(
        lab_vol, {**pre, "intensity": {"mode": "ct", "window": [0, 255]}}, torch.device("cpu")
    )
    back = to_input_grid((x * 255).round().to(torch.uint8), grid, "nearest-exact")
    np.testing.assert_array_equal(back, labels)
    # The oriented model grid is LPS: i points left (-R), j posterior (-A), k superior (+S).
    assert grid.model_shape == (30, 40, 24)


def test_orientation_axes():
    assert orientation_axes(np.eye(3), "RAS") == ((0, 1, 2), ())
    assert orientation_axes(np.eye(3), "LPS") == ((0, 1, 2), (1, 2))
    axes, flips = orientation_axes(ODD_DIRECTION, "LPS")
    assert sorted(axes) == [0, 1, 2]
    with pytest.raises(ValueError, match="orientation code"):
        orientation_axes(np.eye(3), "RRS")


def test_deterministic_uncertainty_and_review_order():
    vol = _phantom()
    model = Threshold()
    model.gain.data.fill_(3.0)  # soft: voxels near 0 HU (the box's blurred edge) are uncertain
    r1 = segment(vol, model, _manifest((1.3, 1.3, 1.3)), "cpu")
    r2 = segment(vol, model, _manifest((1.3, 1.3, 1.3)), "cpu")
    np.testing.assert_array_equal(r1.labels, r2.labels)
    np.testing.assert_array_equal(r1.uncertainty, r2.uncertainty)
    assert r1.uncertainty.shape == vol.shape and r1.uncertainty.dtype == np.float32
    assert 0.0 <= r1.uncertainty.min() and r1.uncertainty.max() <= 1.0
    assert r1.slice_uncertainty.shape == (vol.shape[0],)
    assert sorted(r1.review_order.tolist()) == list(range(vol.shape[0]))
    # Slices through the box (k 6..17) hold its uncertain edges; slices far from it do not.
    top = set(r1.review_order[:8].tolist())
    assert top <= set(range(4, 20))
    assert r1.slice_uncertainty[0] < r1.slice_uncertainty[12]


def test_progress_reports_and_mr_percentiles():
    a = np.zeros((10, 20, 20), dtype=np.float32)
    a[3:7, 5:15, 5:15] = 400.0  # MR units: no physical meaning, percentiles decide
    vol = Volume(
        a + np.random.default_rng(1).normal(0, 5, a.shape).astype(np.float32), spacing=(1.0, 1.0, 2.0)
    )
    seen = []
    res = segment(
        vol,
        Threshold(),
        _manifest((1.0, 1.0, 2.0), modality="MR"),
        "cpu",
        progress=lambda f, s: seen.append((f, s)),
    )
    assert _dice(res.labels == 1, a > 0) > 0.95
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert {"preprocess", "infer", "done"} <= {s for _, s in seen}


def test_label_values_and_class_mismatch():
    vol = _phantom()
    man = mf.new_manifest("threshold", {"tumour": 7}, "CT")
    res = segment(vol, Threshold(), man, "cpu")
    assert set(np.unique(res.labels)) == {0, 7}
    with pytest.raises(ValueError, match="3 classes but the manifest names 1 label"):
        segment(vol, Threshold(n_classes=3), man, "cpu")


def test_real_lung1_with_a_saved_mamba_unet(lung1, tmp_path, monkeypatch):
    """The real pipeline end to end on a real CT: load_model -> segment, coarse grid to stay fast."""
    man = mf.new_manifest(
        "mamba_unet",
        ["lesion"],
        "CT",
        kwargs={"channels": [8, 16, 16, 32, 32]},
        target_spacing=(4.0, 4.0, 5.0),
    )
    torch.manual_seed(0)
    from semisam.specialists import build_specialist

    mf.save_model(tmp_path / "m", build_specialist(man.arch, **man.kwargs), man)
    model, man = mf.load_model(tmp_path / "m", "cpu")
    vol = read_volume(lung1.image)
    res = segment(vol, model, man, "cpu")
    assert res.labels.shape == vol.shape and res.label_volume().same_grid(vol)
    assert res.model_shape == (48, 73, 73)
    assert np.isfinite(res.uncertainty).all()
    # Registry untouched by this module's threshold model.
    assert "threshold" not in SPECIALIST_REGISTRY


def test_small_components_are_removed_when_asked():
    a = np.full((16, 24, 24), -500, dtype=np.int16)
    a[4:12, 4:14, 4:14] = 500  # 800 voxels
    a[13, 20, 20] = 500  # a one-voxel speck
    vol = Volume(a)
    man = _manifest((1.0, 1.0, 1.0))
    assert segment(vol, Threshold(), man, "cpu").labels[13, 20, 20] == 1
    man.inference = {"min_component_voxels": 10}
    res = segment(vol, Threshold(), man, "cpu")
    assert res.labels[13, 20, 20] == 0
    np.testing.assert_array_equal(res.labels[:13], (a[:13] > 0).astype(np.uint8))
