"""Embedding cache: LRU by bytes, keys include the intensity window, thread safety, background
precompute that fills the cache and can be cancelled. Uses a tiny real SAM-architecture model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from tiny_generalists import tiny_sam

from semisam.generalists.base import SliceEmbedding
from semisam.generalists.cache import EmbeddingCache, EmbeddingKey, SliceEncoder, take_slice
from semisam.scan.intensity import IntensityWindow

WIN = IntensityWindow(0.0, 100.0, "test")


def emb(nbytes: int) -> SliceEmbedding:
    return SliceEmbedding(features=torch.zeros(nbytes // 4), slice_shape=(4, 4))


def key(i: int, window: IntensityWindow = WIN) -> EmbeddingKey:
    return EmbeddingKey("m", "scan", "axial", i, window)


def test_lru_evicts_least_recently_used_within_the_byte_bound():
    cache = EmbeddingCache(max_bytes=3000)
    for i in range(3):
        cache.put(key(i), emb(1000))
    assert len(cache) == 3 and cache.nbytes == 3000
    assert cache.get(key(0)) is not None  # 0 becomes most recent
    cache.put(key(3), emb(1000))
    assert key(1) not in cache and key(0) in cache and key(3) in cache
    assert cache.nbytes <= 3000
    cache.put(key(9), emb(5000))  # larger than the bound: not stored, nothing else lost
    assert key(9) not in cache and len(cache) == 3


def test_window_is_part_of_the_key():
    cache = EmbeddingCache(10_000)
    cache.put(key(1), emb(100))
    assert cache.get(key(1, IntensityWindow(0.0, 100.0, "test"))) is not None
    assert cache.get(key(1, IntensityWindow(-50.0, 100.0, "test"))) is None


def test_concurrent_puts_and_gets_keep_the_books_straight():
    cache = EmbeddingCache(max_bytes=40 * 400)

    def worker(offset: int) -> None:
        for i in range(200):
            cache.put(key(offset + i % 60), emb(400))
            cache.get(key(offset + (i * 7) % 60))

    threads = [threading.Thread(target=worker, args=(o,)) for o in (0, 30, 1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.nbytes == 400 * len(cache) <= cache.max_bytes


def test_take_slice_axes():
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert take_slice(arr, "axial", 1).shape == (3, 4)
    assert take_slice(arr, "coronal", 2).shape == (2, 4)
    assert take_slice(arr, "sagittal", 3).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown axis 'axail'"):
        take_slice(arr, "axail", 0)
    with pytest.raises(IndexError, match="outside 0..1"):
        take_slice(arr, "axial", 2)


@pytest.fixture(scope="module")
def encoder():
    model = tiny_sam()
    vol = np.random.default_rng(0).uniform(0, 100, (12, 40, 56)).astype(np.float32)
    return SliceEncoder(model, vol, "axial", WIN, EmbeddingCache(64 * 2**20), scan_id="random")


def test_slice_encoder_caches_and_matches_direct_encoding(encoder):
    first = encoder.embedding(3)
    assert encoder.cached(3)
    again = encoder.embedding(3)
    assert again is first
    assert encoder.embedding_if_cached(3) is first
    assert encoder.embedding_if_cached(4) is None and not encoder.cached(4)  # a look-up never encodes
    direct = encoder.model.encode(encoder.image(3))
    assert torch.allclose(direct.features, first.features)
    assert first.slice_shape == (40, 56)


def test_precompute_fills_the_cache_in_the_background(encoder):
    encoder.cache.clear()
    job = encoder.precompute(range(12))
    assert job.wait(timeout=120) and job.error is None
    assert job.done == 12 and all(encoder.cached(i) for i in range(12))


def test_precompute_can_be_cancelled(encoder):
    encoder.cache.clear()
    real_encode = encoder.model.encode
    started = threading.Event()

    def slow_encode(image):  # the real encoder, slowed so cancellation lands mid-range
        started.set()
        time.sleep(0.05)
        return real_encode(image)

    encoder.model.encode = slow_encode
    try:
        job = encoder.precompute(range(12))
        assert started.wait(30)
        job.cancel()
        assert job.wait(timeout=30)
    finally:
        del encoder.model.encode
    assert job.cancelled and job.done < 12 and job.error is None
    assert sum(encoder.cached(i) for i in range(12)) == job.done


def test_precompute_reports_errors(encoder):
    job = encoder.precompute([0, 99])
    assert job.wait(timeout=60)
    assert isinstance(job.error, IndexError) and job.done == 1


def test_encode_batch_equals_single_encodes(encoder):
    model = encoder.model
    images = [encoder.image(0), encoder.image(5)[:30, :50]]  # different shapes in one batch
    batch = model.encode_batch(images)
    for img, emb in zip(images, batch, strict=True):
        single = model.encode(img)
        assert emb.slice_shape == img.shape
        assert torch.allclose(emb.features, single.features, atol=1e-5)


def test_models_of_different_checkpoints_sharing_a_cache_never_share_an_entry(tmp_path):
    """Review 1a: the key held only the model's name, so a "sam" ViT-H got a "sam" ViT-B's embeddings."""
    from tiny_generalists import save_tiny

    from semisam.generalists import build_generalist
    from semisam.propagation.isotropic import SquarePixels

    a_file = save_tiny(tiny_sam(seed=0), tmp_path / "a.safetensors")
    b_file = save_tiny(tiny_sam(seed=1), tmp_path / "b.safetensors")
    a = build_generalist("sam", a_file, backend="eager")
    b = build_generalist("sam", b_file, backend="eager")
    a_again = build_generalist("sam", a_file, backend="eager")
    assert a.name == b.name == "sam"
    assert a.identity != b.identity and a.identity == a_again.identity
    assert build_generalist("medsam", a_file, backend="eager").identity != a.identity

    vol = np.random.default_rng(1).uniform(0, 100, (3, 24, 24)).astype(np.float32)
    cache = EmbeddingCache(64 * 2**20)
    enc_a = SliceEncoder(a, vol, "axial", WIN, cache, scan_id="same-scan")
    enc_b = SliceEncoder(b, vol, "axial", WIN, cache, scan_id="same-scan")
    emb_a = enc_a.embedding(1)
    assert not enc_b.cached(1)
    emb_b = enc_b.embedding(1)
    assert emb_b is not emb_a and not torch.allclose(emb_a.features, emb_b.features)
    assert len(cache) == 2
    # the same weights loaded again share (that is what the cache is for) ...
    assert (
        SliceEncoder(a_again, vol, "axial", WIN, cache, scan_id="same-scan").embedding_if_cached(1) is emb_a
    )
    # ... but not through square-pixel resampling, and not after the weights change
    assert not SliceEncoder(
        SquarePixels(a, (2.0, 1.0)), vol, "axial", WIN, cache, scan_id="same-scan"
    ).cached(1)
    a_again.load_state_dict(b.state_dict())
    assert a_again.identity != a.identity


def test_models_without_an_identity_never_share():
    class Bare:  # a third-party PromptableModel that predates ``identity``
        name = "bare"

    from semisam.generalists.base import model_identity

    x, y = Bare(), Bare()
    assert model_identity(x) == model_identity(x) != model_identity(y)
