"""Training on CUDA with mixed precision (bf16 where supported, else fp16 + GradScaler); `pytest -m cuda`."""

from __future__ import annotations

import pytest
import torch
from training_synth import FAST, make_store

from semisam.training import TrainConfig, train

pytestmark = pytest.mark.cuda


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method,arch", [("mean_teacher", "mamba_unet"), ("supervised", "unet3d")])
def test_cuda_amp_training_runs_and_registers(tmp_path, method, arch):
    store = make_store(tmp_path / "store", n_train=2, n_val=1, n_unlabeled=1)
    seen = []
    res = train(
        store.root,
        TrainConfig(method=method, arch=arch, iterations=20, device="cuda", **FAST),
        events=seen.append,
    )
    assert res.status == "done", res.message
    start = next(e for e in seen if e["event"] == "start")
    assert start["device"].startswith("cuda")
    losses = [e["losses"]["total"] for e in seen if e["event"] == "iteration"]
    assert all(v == v for v in losses) and losses[-1] < losses[0]
    assert store.models.active().version == res.version
