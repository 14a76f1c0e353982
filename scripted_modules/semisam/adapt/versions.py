"""Generalist versions: an adapted mask decoder as files, in the store's registry, applied to a model.

A version folder holds ``weights.safetensors`` (the mask decoder's state dict, IoU head included) and
``manifest.json``::

    {"format": "semisam-generalist-version", "format_version": 1, "arch": "litemedsam",
     "base_sha256": "<sha256 of the base model's checkpoint file>", "parts": ["mask_decoder"],
     "sha256": "<sha256 of weights.safetensors>", "trained_on": [...case ids], "validation": {...},
     "created": "..."}

The base model's weights digest is part of the manifest: a decoder adapted on one LiteMedSAM checkpoint
is refused on another (its embeddings differ). Versions live under ``STORE/generalists/`` in a
:class:`GeneralistRegistry` (the specialist's registry: versions, active pointer, promote, rollback),
``semisam store list`` shows them, and :func:`apply_version` loads one into a built generalist.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from semisam.fileio import atomic_write_json, sha256_file
from semisam.store.errors import RegistryError
from semisam.store.registry import MANIFEST, WEIGHTS, ModelRegistry

log = logging.getLogger(__name__)

FORMAT = "semisam-generalist-version"
PARTS = ("mask_decoder",)


class GeneralistVersionError(ValueError):
    """A generalist version folder that cannot be used (message names the file and what is wrong)."""


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The version's manifest, checked: format, fields, and the weights file's sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GeneralistVersionError(f"{path}: missing; not a generalist version folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeneralistVersionError(f"{path}: unreadable ({exc}); not a generalist version") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise GeneralistVersionError(f"{path}: not a generalist version (format is not {FORMAT!r})")
    for key, kind in (("arch", str), ("base_sha256", str), ("sha256", str), ("parts", list)):
        if not isinstance(man.get(key), kind):
            raise GeneralistVersionError(f"{path}: field {key!r} is missing or not a {kind.__name__}")
    if not set(man["parts"]) <= set(PARTS):
        raise GeneralistVersionError(f"{path}: unknown parts {man['parts']}; known: {', '.join(PARTS)}")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise GeneralistVersionError(f"{weights}: missing")
    if sha256_file(weights) != man["sha256"]:
        raise GeneralistVersionError(
            f"{weights}: sha256 differs from the manifest's; the file was changed or damaged"
        )
    return man


def save_version(
    folder: str | Path, model, trained_on: list[str], validation: dict, base_sha256: str
) -> Path:
    """Write ``model``'s mask decoder as a version folder (created; must not exist)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.mask_decoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    from semisam.store._fs import utc_now

    atomic_write_json(
        folder / MANIFEST,
        {
            "format": FORMAT,
            "format_version": 1,
            "arch": model.name,
            "base_sha256": base_sha256,
            "parts": list(PARTS),
            "sha256": sha256_file(folder / WEIGHTS),
            "trained_on": list(trained_on),
            "validation": validation,
            "created": utc_now(),
        },
    )
    return folder


def base_digest(model) -> str:
    """The base weights' digest a version must name: the checkpoint file's sha256 for built models."""
    digest = getattr(model, "weights_digest", None)
    if not digest:
        _ = model.identity  # computes the state-dict digest of weights from elsewhere
        digest = model.weights_digest
    return str(digest)


def apply_version(model, folder: str | Path):
    """Load the version in ``folder`` into ``model`` (a SAM-family generalist built from the base weights
    the version names); returns ``model``. Its embeddings are unchanged (the encoder is not touched), so
    its cache identity stays; the decoder answers through eager PyTorch from now on.

    Raises:
        GeneralistVersionError: a damaged folder, another architecture or another base checkpoint.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    man = read_manifest(folder)
    if not hasattr(model, "mask_decoder"):
        raise GeneralistVersionError(f"{folder}: the generalist {model.name!r} has no adaptable mask decoder")
    if man["arch"] != model.name:
        raise GeneralistVersionError(f"{folder}: made for the generalist {man['arch']!r}, not {model.name!r}")
    if man["base_sha256"] != base_digest(model):
        raise GeneralistVersionError(
            f"{folder}: made for another {model.name} checkpoint (base weights sha256 "
            f"{man['base_sha256'][:16]}..., these are {base_digest(model)[:16]}...); adapt again for this one"
        )
    try:
        state = load_file(str(folder / WEIGHTS), device=str(model.device))
        model.mask_decoder.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise GeneralistVersionError(f"{folder / WEIGHTS}: does not fit the decoder ({exc})") from None
    if hasattr(model, "set_fast_decoder"):
        model.set_fast_decoder(None)  # an exported decoder graph holds the frozen weights
    model.generalist_version = folder.name
    log.info("generalist %s answers with the adapted decoder %s", model.name, folder)
    return model


class GeneralistRegistry(ModelRegistry):
    """Generalist versions of a store, under ``STORE/generalists/`` (same layout and rules as the
    specialist's :class:`~semisam.store.registry.ModelRegistry`)."""

    SUBDIR = "generalists"

    def verify_folder(self, folder: Path) -> dict[str, Any]:
        try:
            return read_manifest(folder)
        except GeneralistVersionError as exc:
            raise RegistryError(f"not a valid generalist version: {exc}", folder) from exc


def active_version_path(store_root: str | Path, generalist: str | None = None) -> Path | None:
    """The store's active generalist version folder, or ``None`` (the frozen generalist answers).

    With ``generalist`` (a registry name), only a version adapted from that generalist: a store whose
    LiteMedSAM was adapted still lets SAM answer as it is, instead of refusing it.
    """
    from semisam.store import LabeledStore

    v = GeneralistRegistry(LabeledStore(store_root)).active()
    if v is None or (generalist is not None and v.arch != generalist):
        return None
    return v.path


def version_key(folder: str | Path | None) -> str:
    """A cache key of a version folder: its resolved path and its manifest's weights sha256 (a version
    replaced under the same path is another model); ``""`` for ``None``. Cheap: nothing is hashed here;
    :func:`apply_version` checks the files."""
    if folder is None:
        return ""
    try:
        sha = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")).get("sha256", "")
    except (OSError, ValueError, AttributeError):
        sha = ""  # apply_version then says what is wrong with the folder
    return f"{Path(folder).resolve()}:{sha}"
