"""The store's active specialist (semisam.store.active): which version and its manifest, loaded once per
folder content and device, a replaced folder noticed; the one helper Auto-segment, the loop's proposals
and training use."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from semisam.model_folder import CheckpointError, new_manifest, read_manifest, save_model  # noqa: E402
from semisam.specialists import build_specialist  # noqa: E402
from semisam.store import LabeledStore  # noqa: E402
from semisam.store.active import active_specialist, load_active, load_specialist  # noqa: E402

KWARGS = {"channels": [8, 16, 16, 32, 32], "mamba_depth": 1}


def _saved(folder, seed):
    """A small mamba_unet model folder with weights drawn from ``seed``; returns the model."""
    man = new_manifest("mamba_unet", ["lesion"], "CT", kwargs=KWARGS)
    torch.manual_seed(seed)
    model = build_specialist(man.arch, **man.kwargs).eval()
    save_model(folder, model, man)
    return model


def _same_weights(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.fixture
def store(tmp_path):
    return LabeledStore.create(tmp_path / "store", {1: "lesion"})


def test_no_active_version(store, tmp_path):
    assert active_specialist(store) is None and load_active(store) is None
    _saved(tmp_path / "m1", 1)
    store.models.add(tmp_path / "m1")  # registered, not promoted
    assert active_specialist(store) is None and load_active(store, "cpu", {}) is None


def test_active_version_its_manifest_and_its_model(store, tmp_path):
    first = _saved(tmp_path / "m1", 1)
    v1 = store.models.add(tmp_path / "m1", metrics={"dice": 0.5})
    store.models.promote(v1.version)
    version, manifest = active_specialist(store)
    assert version.version == "v0001" and version.path == store.models.active_path()
    assert manifest == read_manifest(v1.path)
    version, model, manifest = load_active(store, "cpu")
    assert version.version == "v0001" and manifest.sha256 == v1.sha256
    assert not model.training and _same_weights(model, first)


def test_a_cache_loads_once_per_folder_content_and_device(store, tmp_path):
    _saved(tmp_path / "m1", 1)
    second = _saved(tmp_path / "m2", 2)
    v1 = store.models.add(tmp_path / "m1", metrics={"dice": 0.5})
    v2 = store.models.add(tmp_path / "m2", metrics={"dice": 0.6})
    store.models.promote(v1.version)
    cache: dict = {}
    _, model_a, _ = load_active(store, "cpu", cache)
    _, model_b, _ = load_active(store, "cpu", cache)
    assert model_b is model_a and list(cache) == [(str(v1.path.resolve()), v1.sha256, "cpu")]
    assert load_specialist(v1.path, "cpu", cache)[0] is model_a  # the same folder by its own path
    assert load_specialist(v1.path, "cpu")[0] is not model_a  # no cache: loaded anew, nothing kept
    store.models.promote(v2.version)
    version, model_c, _ = load_active(store, "cpu", cache)
    assert version.version == "v0002" and _same_weights(model_c, second)
    assert list(cache) == [(str(v2.path.resolve()), v2.sha256, "cpu")]  # one specialist at a time


def test_a_folder_altered_after_loading_is_refused(store, tmp_path):
    _saved(tmp_path / "m1", 1)
    cache: dict = {}
    load_specialist(tmp_path / "m1", "cpu", cache)
    weights = tmp_path / "m1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match the manifest"):
        load_specialist(tmp_path / "m1", "cpu", cache)
