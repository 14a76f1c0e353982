"""The selective scan's back-ends against one plain sequential float64 reference."""

from __future__ import annotations

import pytest
import torch

from semisam.specialists import selective_scan as ss


def _inputs(batch=2, dim=6, length=70, dstate=5, dtype=torch.float64, seed=0, strong_decay=False):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    A = -(torch.rand(dim, dstate, generator=g, dtype=torch.float64) * (40 if strong_decay else 4) + 0.1).to(
        dtype
    )
    return dict(
        u=r(batch, dim, length),
        delta=r(batch, dim, length),
        A=A,
        B=r(batch, dstate, length),
        C=r(batch, dstate, length),
        D=r(dim),
        z=r(batch, dim, length),
        delta_bias=r(dim),
    )


def _reference(kw):
    return ss.selective_scan_ref(**{k: v.double() for k, v in kw.items()}, delta_softplus=True)


@pytest.mark.parametrize("backend", ["sequential", "logspace"])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_pytorch_scan_matches_float64_reference(backend, chunk):
    kw = _inputs()
    ref = _reference(kw)
    y64 = ss.selective_scan(**kw, delta_softplus=True, backend=backend, chunk=chunk)
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64, ref, rtol=1e-10, atol=1e-10)
    y32 = ss.selective_scan(
        **{k: v.float() for k, v in kw.items()}, delta_softplus=True, backend=backend, chunk=chunk
    )
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["sequential", "logspace"])
def test_strong_decay_and_no_optional_terms(backend):
    # Decays of exp(-40 * dt) per step: a naive cumulative-product scan divides by ~0 here.
    kw = _inputs(strong_decay=True, length=150, seed=3)
    for k in ("D", "z", "delta_bias"):
        kw.pop(k)
    kw["delta"] = kw["delta"].abs() + 0.5  # positive dt without softplus
    ref = ss.selective_scan_ref(**kw)
    y = ss.selective_scan(**{k: v.float() for k, v in kw.items()}, backend=backend, chunk=32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4)


def test_reference_is_the_recurrence():
    # One state, one channel, written out by hand: h1 = b1, h2 = a2 h1 + b2; y = C h.
    u = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    dt = torch.tensor([[[0.5, 0.25]]], dtype=torch.float64)
    A = torch.tensor([[-2.0]], dtype=torch.float64)
    B = torch.tensor([[[3.0, 4.0]]], dtype=torch.float64)
    C = torch.tensor([[[1.0, 10.0]]], dtype=torch.float64)
    h1 = 0.5 * 3.0 * 1.0
    h2 = torch.exp(torch.tensor(0.25 * -2.0)).item() * h1 + 0.25 * 4.0 * 2.0
    y = ss.selective_scan_ref(u, dt, A, B, C)
    torch.testing.assert_close(y, torch.tensor([[[h1, 10.0 * h2]]], dtype=torch.float64))


def test_bad_backend_is_named():
    kw = _inputs(length=4)
    with pytest.raises(ValueError, match="backend"):
        ss.selective_scan(**kw, backend="fast")
    if ss._mamba_ssm_scan is None:
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            ss.selective_scan(**kw, backend="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(ss._mamba_ssm_scan is None, reason="mamba-ssm (CUDA kernel) is not installed")
def test_cuda_kernel_matches_float64_reference():
    kw = _inputs(batch=2, dim=16, length=256, dstate=8, dtype=torch.float32)
    ref = _reference(kw)
    y = ss.selective_scan(**{k: v.cuda() for k, v in kw.items()}, delta_softplus=True, backend="cuda")
    torch.testing.assert_close(y.double().cpu(), ref, rtol=2e-3, atol=2e-3)
    # The automatic choice on GPU tensors is the kernel, and agrees with the PyTorch scan.
    y_auto = ss.selective_scan(**{k: v.cuda() for k, v in kw.items()}, delta_softplus=True)
    y_torch = ss.selective_scan(
        **{k: v.cuda() for k, v in kw.items()}, delta_softplus=True, backend="sequential"
    )
    torch.testing.assert_close(y_auto, y_torch, rtol=2e-3, atol=2e-3)
