"""The fp16 disk cache of generalist slice embeddings: keys by content, LRU bound, corrupt files, real LiteMedSAM."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from semisam.generalists.base import SliceEmbedding, SlicePrompt
from semisam.scan.intensity import IntensityWindow
from semisam.training.methods.semi.embedding_store import EmbeddingStore


def _emb(value: float) -> SliceEmbedding:
    return SliceEmbedding(features=torch.full((1, 4, 16, 16), value), slice_shape=(20, 30))


def test_round_trip_is_fp16_and_keys_differ_by_content_and_window(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.put("k", _emb(1.0 / 3.0))
    got = store.get("k")
    assert got is not None and got.slice_shape == (20, 30) and got.features.dtype == torch.float32
    assert abs(float(got.features[0, 0, 0, 0]) - 1 / 3) < 1e-3  # stored as fp16
    assert store.get("other") is None and store.hits == 1 and store.misses == 1
    model = type("M", (), {"identity": "m|w:abc", "name": "m"})()
    a = np.zeros((8, 8), np.float32)
    b = a.copy()
    b[3, 3] = 0.5
    keys = {
        EmbeddingStore.key(model, a),
        EmbeddingStore.key(model, b),
        EmbeddingStore.key(model, a, IntensityWindow(0.0, 2.0, "manual")),
    }
    assert len(keys) == 3


def test_lru_bound_evicts_least_recently_used(tmp_path):
    one = EmbeddingStore(tmp_path / "probe")
    one.put("x", _emb(0.0))
    size = one.nbytes
    store = EmbeddingStore(tmp_path / "c", max_bytes=int(size * 2.5))  # room for two
    store.put("a", _emb(1.0))
    store.put("b", _emb(2.0))
    past = time.time() - 100
    os.utime(store.path("a"), (past, past))
    os.utime(store.path("b"), (past + 1, past + 1))
    assert store.get("a") is not None  # a is now the most recently used
    store.put("c", _emb(3.0))
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    assert store.nbytes <= store.max_bytes


def test_corrupt_file_is_a_miss_and_is_replaced(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.put("k", _emb(1.0))
    store.path("k").write_bytes(b"not an npz")
    assert store.get("k") is None
    store.put("k", _emb(2.0))
    assert float(store.get("k").features.max()) == 2.0


@pytest.mark.slow  # ~25 s on the shared 2-core machine (two 256x256 encodes); run with `-m slow`
def test_real_litemedsam_encodes_once_and_fp16_keeps_the_mask(tmp_path, brain1):
    from semisam.generalists import build_generalist
    from semisam.scan.intensity import apply_window, percentile_window
    from semisam.scan.volume import read_volume

    vol = read_volume(brain1.image)
    lab = read_volume(brain1.label).array > 0
    z = int(np.argmax(lab.reshape(len(lab), -1).sum(1)))
    image = apply_window(vol.array[z], percentile_window(vol.array))
    ys, xs = np.nonzero(lab[z])
    box = SlicePrompt(box=(xs.min() - 3.0, ys.min() - 3.0, xs.max() + 3.0, ys.max() + 3.0))
    g = build_generalist("litemedsam", device="cpu")
    store = EmbeddingStore(tmp_path)
    first = store.get_or_encode(g, image)
    second = store.get_or_encode(g, image)
    assert store.encoded == 1 and store.hits == 1
    fp32 = g.predict(g.encode(image), box).mask
    fp16 = g.predict(second, box).mask
    differ = float((fp32 != fp16).mean())
    print(f"fp16 mask differs on {differ:.5f} of pixels")
    assert differ < 0.001, differ  # fp16 storage changes < 0.1 % of the slice's pixels
    assert torch.equal(first.features, second.features)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])


def test_the_runs_cache_holds_every_slice_of_its_cases_twice(tmp_path):
    """A semi-supervised run sizes the store's embedding cache to its cases (whole slice + view each), so a
    refresh does not evict what the next one reads; small runs keep the 2 GiB floor; an option overrides."""
    from types import SimpleNamespace

    import torch

    from semisam.training.methods.base import CaseData
    from semisam.training.methods.semi.embedding_store import DEFAULT_MAX_BYTES
    from semisam.training.methods.semisam_plus import EMBEDDING_FILE_BYTES, embedding_store, run_cache_bytes

    def case(z: int) -> CaseData:
        return CaseData(case_id=f"c{z}", image=torch.zeros((z, 4, 4)), mask=None)

    whole_heads = SimpleNamespace(labeled=[case(181)], unlabeled=[case(181)] * 6, cache=tmp_path, extra={})
    assert run_cache_bytes(whole_heads) == 2 * 7 * 181 * EMBEDDING_FILE_BYTES > DEFAULT_MAX_BYTES
    assert embedding_store(whole_heads).max_bytes == run_cache_bytes(whole_heads)
    small = SimpleNamespace(labeled=[case(16)], unlabeled=[case(16)], cache=tmp_path, extra={})
    assert run_cache_bytes(small) == DEFAULT_MAX_BYTES
    given = SimpleNamespace(labeled=[], unlabeled=[], cache=tmp_path, extra={})
    assert embedding_store(given, 12345).max_bytes == 12345
