"""ONNX exports of the encoder and the prompt decoder land atomically in $SEMISAM_CACHE_DIR (no temporary
files left behind) and answer like the eager model. Uses a tiny real SAM-architecture model."""

from __future__ import annotations

import numpy as np
import torch
from tiny_generalists import tiny_sam

from semisam.fileio import TMP_PREFIX
from semisam.generalists.base import SlicePrompt
from semisam.generalists.fast_encoder import apply_backend


def test_exports_are_written_atomically_and_match_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMISAM_CACHE_DIR", str(tmp_path))
    model = tiny_sam(seed=2)
    image = np.random.default_rng(0).uniform(0, 1, (40, 56)).astype(np.float32)
    prompt = SlicePrompt(box=(10, 8, 30, 25))
    eager_emb = model.encode(image)
    eager = model.predict(eager_emb, prompt)
    eager_identity = model.identity
    assert apply_backend(model, "onnxruntime") == "onnxruntime"
    assert model.identity != eager_identity  # onnxruntime features differ (~1e-6): not the same cache entry
    fast_emb = model.encode(image)
    fast = model.predict(fast_emb, prompt)
    files = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert len(files) == 2 and files[0].startswith("decoder-") and files[1].startswith("encoder-"), files
    assert not any(name.startswith(TMP_PREFIX) for name in files)
    assert torch.allclose(fast_emb.features, eager_emb.features, atol=1e-4)
    assert np.allclose(fast.logits, eager.logits, atol=1e-3)
