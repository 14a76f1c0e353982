"""Tiny synthetic stores for the training tests: CT-like 24 x 48 x 48 volumes with one ellipsoid lesion;
and :class:`ThresholdStudent`, a real one-convolution specialist whose prediction a test can set.

Spacing is the models' default target spacing (0.8, 0.8, 1.5) mm, so the model grid equals the
volume grid and a test's crops are the volume's own pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from semisam.scan.volume import Volume
from semisam.store import LabeledStore

SHAPE = (24, 48, 48)
SPACING = (0.8, 0.8, 1.5)
#: Small, fast settings: 48-px crops (the whole slice), batch 4.
FAST = {"crop_size": [48, 48], "patch_size": [16, 48, 48], "batch_size": 4, "warmup": 2, "lr": 3e-3}


def synthetic_case(seed: int, shape=SHAPE) -> tuple[Volume, np.ndarray]:
    """One scan (HU-like: background -300 +- 60, lesion +150 +- 60) and its lesion mask (uint8)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [rng.uniform(8, shape[0] - 8), rng.uniform(14, shape[1] - 14), rng.uniform(14, shape[2] - 14)]
    r = [rng.uniform(3, 5), rng.uniform(5, 9), rng.uniform(5, 9)]
    inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0
    img = rng.normal(-300, 60, shape).astype(np.float32)
    img[inside] = rng.normal(150, 60, int(inside.sum()))
    return Volume(img, spacing=SPACING), inside.astype(np.uint8)


def make_store(
    root: Path, n_train: int = 3, n_val: int = 1, n_unlabeled: int = 0, seed: int = 0
) -> LabeledStore:
    """A store with ``n_train`` training, ``n_val`` validation cases and ``n_unlabeled`` pool scans."""
    store = LabeledStore.create(root, {1: "lesion"}, modality="CT")
    for i in range(n_train + n_val):
        vol, mask = synthetic_case(seed * 100 + i)
        store.add_case(vol, mask, split="train" if i < n_train else "validation")
    for i in range(n_unlabeled):
        vol, _ = synthetic_case(seed * 100 + 50 + i)
        store.add_unlabeled(vol)
    return store


def semi_store_and_config(root: Path, method: str, iterations: int, parts: dict, **extra):
    """``(store, TrainConfig)`` of a small semi-supervised run with the real generalist: 2 training cases,
    2 small unlabeled scans (:func:`add_small_unlabeled`), seed 0 on CPU, a refresh every 10 iterations."""
    from semisam.training import TrainConfig

    store = make_store(root, n_train=2, n_val=0)
    add_small_unlabeled(store)
    cfg = TrainConfig(
        method=method,
        iterations=iterations,
        seed=0,
        device="cpu",
        refresh_every=10,
        parts=parts,
        **FAST,
        **extra,
    )
    return store, cfg


def add_small_unlabeled(store: LabeledStore, n: int = 2) -> None:
    """``n`` unlabeled scans of 16 slices (images only) in ``store``: few slices keep the real
    generalist's encoder work small in the semi-supervised tests."""
    for i in range(n):
        vol, _ = synthetic_case(70 + i, shape=(16, 48, 48))
        store.add_unlabeled(vol)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads ran these tiny models 30x slower
    (measured 1.17 s vs 0.04 s per step of batch 4 x 48 x 48) through spin-waiting on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def child_env() -> dict[str, str]:
    """Environment for a ``python -m semisam train`` child: the package on the path, one thread."""
    import semisam

    env = dict(os.environ)
    src = str(Path(semisam.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


class ThresholdStudent(torch.nn.Module):
    """A real (tiny) 2.5D specialist: one 1x1 convolution, initialised to call pixels brighter than 0.5
    foreground."""

    input_kind = "2.5d"
    in_slices = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, 0] = 20.0
            self.conv.bias[1] = -10.0  # foreground where intensity > 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
