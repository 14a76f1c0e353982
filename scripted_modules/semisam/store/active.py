"""The store's active specialist, one way for Auto-segment, the loop's replay and training.

* :func:`active_specialist`: which version is active and its manifest (no weights read, no torch);
* :func:`load_specialist`: a model folder verified (files, format, weights' sha256) and loaded; with a
  cache, once per ``(folder, weights sha256, device)``: the folder is verified on every call (cheap next to
  inference), so a folder replaced meanwhile is loaded again, and the cache holds one specialist at a time;
* :func:`load_active`: the active version loaded through :func:`load_specialist`, or ``None``.

SemiSAMSegment's *Auto-segment* runs :func:`load_specialist` on the folder it chose (the store's active
version, else the user's model folder); the simulated annotator's proposals (:mod:`semisam.loop.replay`)
run :func:`load_active`, so the loop measures the same loading the user's click does; training starts
from :func:`active_specialist`'s manifest (:func:`semisam.training.steps.plan_cases`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semisam.model_folder import ModelManifest, load_model, read_manifest, verify_model_dir

if TYPE_CHECKING:
    from semisam.store.labeled import LabeledStore
    from semisam.store.registry import ModelVersion

#: ``(resolved folder, weights sha256, device) -> (model, manifest)``: what :func:`load_specialist` keeps.
SpecialistCache = dict[tuple[str, str, str], tuple[Any, ModelManifest]]


def active_specialist(store: LabeledStore) -> tuple[ModelVersion, ModelManifest] | None:
    """``(version record, manifest)`` of the store's active version, or ``None`` when it has none.

    Raises:
        StoreError: the registry is damaged. CheckpointError: the version's manifest is.
    """
    active = store.models.active()
    if active is None:
        return None
    return active, read_manifest(active.path)


def load_specialist(
    model_dir: str | os.PathLike, device: Any = "cpu", cache: SpecialistCache | None = None
) -> tuple[Any, ModelManifest]:
    """``(model in eval mode on device, manifest)`` of a model folder, verified.

    Args:
        model_dir: a specialist model folder (``manifest.json`` + ``weights.safetensors``).
        device: a torch device or its name.
        cache: keeps the loaded model per ``(folder, weights sha256, device)`` (the module docstring);
            ``None``: load now, keep nothing.

    Raises:
        CheckpointError: verification failed, or the weights do not fit the architecture.
    """
    if cache is None:
        return load_model(model_dir, device)
    manifest = verify_model_dir(model_dir)  # cheap next to inference; catches a replaced folder
    key = (str(Path(model_dir).resolve()), manifest.sha256, str(device))
    if key not in cache:
        cache.clear()  # one specialist at a time: models of a few MB, but no reason to pile them up
        cache[key] = load_model(model_dir, device)
    return cache[key]


def load_active(
    store: LabeledStore, device: Any = "cpu", cache: SpecialistCache | None = None
) -> tuple[ModelVersion, Any, ModelManifest] | None:
    """``(version record, model, manifest)`` of the store's active version (:func:`load_specialist`),
    or ``None`` when it has none."""
    active = store.models.active()
    if active is None:
        return None
    model, manifest = load_specialist(active.path, device, cache)
    return active, model, manifest
