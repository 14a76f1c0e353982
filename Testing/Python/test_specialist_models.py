"""Specialist registry and networks: shapes, sizes, determinism, BatchNorm folding."""

from __future__ import annotations

import pytest
import torch

from semisam.inference import prepare_model
from semisam.specialists import SPECIALIST_REGISTRY, build_specialist, count_parameters


def test_registry_names_and_errors():
    assert {"mamba_unet", "unet3d"} <= set(SPECIALIST_REGISTRY)
    with pytest.raises(ValueError, match="unknown specialist architecture 'nope'"):
        build_specialist("nope")
    with pytest.raises(ValueError, match="bad arguments for specialist 'mamba_unet'"):
        build_specialist("mamba_unet", widths=3)
    with pytest.raises(ValueError, match="in_slices must be odd"):
        build_specialist("mamba_unet", in_slices=2)


def test_parameter_budgets():
    mamba = build_specialist("mamba_unet", n_classes=2)
    assert 3e5 < count_parameters(mamba) <= 2_000_000
    unet = build_specialist("unet3d", n_classes=2)
    assert abs(count_parameters(unet) - 4.8e6) < 0.05e6  # the 4.8 M reference
    assert mamba.input_kind == "2.5d" and unet.input_kind == "3d"


@pytest.mark.parametrize("hw", [(64, 64), (45, 70)])
def test_mamba_unet_shapes_and_multilabel(hw):
    torch.manual_seed(0)
    m = build_specialist("mamba_unet", in_slices=5, n_classes=4).eval()
    x = torch.randn(3, 5, *hw)
    with torch.inference_mode():
        y = m(x)
    assert y.shape == (3, 4, *hw)
    assert torch.isfinite(y).all()


def test_mamba_unet_trains_a_step():
    # A training engineer will train it: gradients reach every parameter, including the scan's.
    torch.manual_seed(0)
    m = build_specialist("mamba_unet", n_classes=3, channels=[8, 16, 16, 32, 32], mamba_depth=1)
    x = torch.randn(2, 3, 64, 64)
    target = torch.randint(0, 3, (2, 64, 64))
    loss = torch.nn.functional.cross_entropy(m(x), target)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert m.mamba[0].A_log.grad.abs().sum() > 0


@pytest.mark.parametrize("hw", [(64, 64), (45, 70)])
def test_unet2d_is_a_25d_specialist_of_similar_size(hw):
    """The plain 2D U-Net (MONAI) takes the same 2.5D stacks as mamba_unet, any slice size (padded), and
    is of a similar size (0.3-1 M parameters), so the two compare at equal CPU time."""
    torch.manual_seed(0)
    m = build_specialist("unet2d", in_slices=5, n_classes=3)
    assert m.input_kind == "2.5d" and 3e5 < count_parameters(build_specialist("unet2d")) < 1e6
    x = torch.randn(2, 5, *hw)
    y = m(x)
    assert y.shape == (2, 3, *hw) and torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.randint(0, 3, (2, *hw))).backward()
    assert all(p.grad is not None for p in m.parameters())
    with pytest.raises(ValueError, match="in_slices must be odd"):
        build_specialist("unet2d", in_slices=4)


def test_unet3d_shape():
    m = build_specialist("unet3d", n_classes=3).eval()
    with torch.inference_mode():
        assert m(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_folded_model_gives_the_same_logits_and_is_deterministic():
    torch.manual_seed(1)
    m = build_specialist("mamba_unet", n_classes=2).eval()
    # Non-trivial BatchNorm statistics, as after training.
    for bn in [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 96, 80)
    with torch.inference_mode():
        ref = m(x)
        fast = prepare_model(m, torch.device("cpu"))
        out1, out2 = fast(x), fast(x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fast.modules())
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())  # the original is untouched
    torch.testing.assert_close(out1, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(out1, out2)
