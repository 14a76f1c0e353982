"""The selective scan of Mamba (S6), with interchangeable back-ends checked against one reference.

Semantics are those of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (Mamba-1)::

    dt      = softplus(delta + delta_bias)            if delta_softplus else delta + delta_bias
    h_t     = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t          (state h: (batch, dim, dstate))
    y_t     = <h_t, C_t> + D * u_t;   y *= silu(z)  when z is given

Shapes: ``u, delta, z``: ``(batch, dim, L)``; ``A``: ``(dim, dstate)`` (negative reals);
``B, C``: ``(batch, dstate, L)``; ``D, delta_bias``: ``(dim,)``. Returns ``(batch, dim, L)`` in ``u``'s
dtype (the scan itself runs in float32 or better).

Back-ends (:func:`selective_scan` picks one with ``backend="auto"``):

* ``"cuda"``: ``mamba-ssm``'s fused CUDA kernel, when the package imports and the tensors are on a GPU;
* ``"sequential"``: a PyTorch loop over time steps; the decay ``exp(dt*A)`` and input ``dt*B*u`` are
  formed for a chunk of steps at once so the Python loop only does one multiply-add per step;
* ``"logspace"``: a parallel scan in log space, per chunk: ``h_t = sum_s exp(S_t - S_s) b_s`` with
  ``S = cumsum(dt*A)``, evaluated with ``logcumsumexp`` on the positive and negative parts of ``b``
  (so no ``exp`` overflows however strong the decay), the state carried from chunk to chunk;
* ``"reference"``: :func:`selective_scan_ref`, a plain sequential loop (use float64 for checking).

On the shared 2-core CPU, for the shapes of ``mamba_unet``'s bottleneck (batch 32, dim 192, L 169, dstate 8)
the sequential back-end is the faster one (see ``Testing/benchmarks/autoseg.py`` notes and the
measurement in :data:`DEFAULT_CPU_BACKEND`'s comment), so ``auto`` uses it off-GPU.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

try:  # The CUDA kernel is optional: mamba-ssm only builds where nvcc and a GPU exist.
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_ssm_scan
except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA extension
    _mamba_ssm_scan = None

BACKENDS = ("auto", "cuda", "sequential", "logspace", "reference")
#: Measured on the shared 2-core CPU, shapes (batch 32, dim 192, L 169, dstate 8), float32, median of 5,
#: two rounds: sequential (1 thread in the loop) 0.56 / 0.22 s, logspace 1.5 / 1.5 s (logcumsumexp costs
#: several transcendental operations per element; the sequential loop one multiply-add).
DEFAULT_CPU_BACKEND = "sequential"


def cuda_kernel_available() -> bool:
    """True when ``mamba-ssm``'s CUDA kernel imported and a GPU is visible."""
    return _mamba_ssm_scan is not None and torch.cuda.is_available()


def _prepare_dt(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    if delta_bias is not None:
        delta = delta + delta_bias[None, :, None].to(delta.dtype)
    return F.softplus(delta) if delta_softplus else delta


def _finish(
    y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    if D is not None:
        y = y + u * D[None, :, None].to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Plain sequential scan, one time step at a time, in the dtype of ``u`` (float64 for checks)."""
    dtype = u.dtype
    dt = _prepare_dt(delta, delta_bias, delta_softplus)
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, :, t, None] * A[None])  # (batch, dim, dstate)
        h = decay * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return _finish(torch.stack(ys, dim=-1), u, D, z, dtype)


@contextlib.contextmanager
def _one_thread():
    """Run a loop of small ops on one intra-op thread.

    Each time step touches ~50k floats: split over 2 threads, the synchronisation costs more than the
    work, badly so on a shared CPU (measured with batch 32, dim 192, L 169, dstate 8, under load:
    2 threads 630-1790 ms, 1 thread 217-556 ms). ``torch.set_num_threads`` is process-wide, so it is
    restored right after the loop.
    """
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _scan_sequential(u, dt, A, B, C, chunk: int) -> torch.Tensor:
    batch, dim, length = u.shape
    # Time-major, state-before-channel layout (L, batch, dstate, dim), made contiguous once: each step
    # reads and writes one contiguous block and every elementwise op runs along the long channel axis.
    # Broadcasting over the strided (batch, dim, L) views instead cost ~10 ns per element (measured:
    # 9.4 ms for one 655k-element multiply), more than the whole rest of the Mamba block.
    dt_t = dt.permute(2, 0, 1).contiguous()  # (L, batch, dim)
    du_t = dt_t * u.permute(2, 0, 1)
    B_t = B.permute(2, 0, 1).contiguous().unsqueeze(-1)  # (L, batch, dstate, 1)
    C_t = C.permute(2, 0, 1).contiguous().unsqueeze(-1)
    A_t = A.t().contiguous()  # (dstate, dim)
    h = u.new_zeros(batch, A.shape[1], dim)
    outs = []
    # Training needs autograd, which in-place ``out=`` writes do not support: keep a list of states.
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, dt, A, B, C))
    grad = grad or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()  # exporters: no out=
    for s in range(0, length, chunk):
        e = min(s + chunk, length)
        decay = torch.exp(dt_t[s:e].unsqueeze(2) * A_t)  # (l, batch, dstate, dim)
        hs = du_t[s:e].unsqueeze(2) * B_t[s:e]  # input term, overwritten by the states
        if grad:
            states = []
            for t in range(e - s):
                h = decay[t] * h + hs[t]
                states.append(h)
            hs = torch.stack(states)
        else:
            with _one_thread():
                for t in range(e - s):
                    torch.addcmul(hs[t], decay[t], h, out=hs[t])
                    h = hs[t]
        # y_t = <h_t, C_t> over the state axis, for the whole chunk at once.
        outs.append((hs * C_t[s:e]).sum(dim=2))  # (l, batch, dim)
    return torch.cat(outs).permute(1, 2, 0)


def _scan_logspace(u, dt, A, B, C, chunk: int) -> torch.Tensor:
    # float64 inside: the exponents S_t and -S_s reach ~1e3 under strong decay, and float32 loses
    # ~1e-4 relative precision in their sum (measured 3.7e-3 relative error with dt*A ~ -40 per step).
    dtype = u.dtype
    u, dt, A, B, C = (t.double() for t in (u, dt, A, B, C))
    batch, dim, length = u.shape
    h = u.new_zeros(batch, dim, A.shape[1])
    outs = []
    for s in range(0, length, chunk):
        e = min(s + chunk, length)
        dts = dt[:, :, s:e]
        log_decay = dts.unsqueeze(-1) * A[None, :, None, :]  # (batch, dim, l, dstate), <= 0
        S = torch.cumsum(log_decay, dim=2)
        b = (dts * u[:, :, s:e]).unsqueeze(-1) * B[:, None, :, s:e].transpose(-1, -2)
        # log of the positive and the negative parts (log 0 = -inf drops a term exactly).
        pos = torch.logcumsumexp(torch.log(b.clamp(min=0)) - S, dim=2)
        neg = torch.logcumsumexp(torch.log((-b).clamp(min=0)) - S, dim=2)
        hs = torch.exp(S + pos) - torch.exp(S + neg) + torch.exp(S) * h.unsqueeze(2)
        h = hs[:, :, -1]
        outs.append(torch.einsum("bdln,bnl->bdl", hs, C[:, :, s:e]))
    return torch.cat(outs, dim=-1).to(dtype)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    chunk: int = 64,
) -> torch.Tensor:
    """Selective scan ``(batch, dim, L) -> (batch, dim, L)``; see the module docstring for the maths.

    Args:
        backend: one of :data:`BACKENDS`. ``auto`` = ``cuda`` when the kernel is available and ``u``
            is on a GPU, else :data:`DEFAULT_CPU_BACKEND`.
        chunk: time steps handled per chunk by the PyTorch back-ends (memory ~ batch*dim*chunk*dstate).
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective scan backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "cuda" if (u.is_cuda and _mamba_ssm_scan is not None) else DEFAULT_CPU_BACKEND
    if backend == "cuda":
        if _mamba_ssm_scan is None:
            raise RuntimeError(
                "selective scan backend 'cuda' needs the mamba-ssm package, which is not installed"
            )
        if not u.is_cuda:
            raise RuntimeError(
                "selective scan backend 'cuda' needs CUDA tensors; got tensors on " + str(u.device)
            )
        return _mamba_ssm_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if backend == "reference":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u_, A_, B_, C_ = (t.to(work) for t in (u, A, B, C))
    dt = _prepare_dt(delta.to(work), None if delta_bias is None else delta_bias.to(work), delta_softplus)
    scan = _scan_sequential if backend == "sequential" else _scan_logspace
    y = scan(u_, dt, A_, B_, C_, max(1, int(chunk)))
    return _finish(y, u_, D, z, dtype)
