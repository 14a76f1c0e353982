"""``ModelRegistry``: the specialist's versions inside a store, their validation metrics, the active one.

Layout under ``<store>/models/``::

    versions/v0001/      a copy of a model folder (manifest.json + weights.safetensors, see
                         :mod:`semisam.model_folder`) plus registry.json (our record: when added, from
                         where, weights sha256, metrics on the validation split and the case ids used)
    active.json          {"active": "v0003", "stack": ["v0001", "v0002"], "log": [...]} - the pointer

A version folder is copied into a hidden staging folder and committed by one rename, like a case. The
active pointer is one small JSON file replaced atomically (temporary file, fsync, rename, fsync folder),
so a reader sees the old or the new active version, never a mix. ``stack`` holds the previously active
versions: :meth:`ModelRegistry.promote` pushes the current one, :meth:`ModelRegistry.rollback` pops it.
Model folders are immutable once registered; only ``registry.json`` (metrics) and ``active.json`` change.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semisam.fileio import sha256_file
from semisam.store import _fs
from semisam.store.errors import RegistryError, StoreFormatError

if TYPE_CHECKING:
    from semisam.store.labeled import LabeledStore

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
RECORD = "registry.json"
ACTIVE = "active.json"
VERSION_RE = re.compile(r"^v(\d{4,})$")


@dataclass
class ModelVersion:
    """One registered model version.

    Attributes:
        version: ``v0001``, ``v0002``... in registration order.
        path: the version's folder (load the model from here).
        added: ISO time of registration.
        source: the folder it was copied from (for people).
        arch: architecture name from the manifest.
        parent: the manifest's parent version, if any.
        sha256: SHA-256 of ``weights.safetensors``.
        metrics: metrics on the validation split, e.g. ``{"dice": 0.81}`` (empty until evaluated).
        evaluated_on: the validation case ids those metrics were computed on.
        evaluated: ISO time of that evaluation.
    """

    version: str
    path: Path
    added: str
    source: str | None
    arch: str | None
    parent: str | None
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)
    evaluated_on: list[str] = field(default_factory=list)
    evaluated: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "path"}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], path: Path) -> ModelVersion:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "path"}
        return cls(path=path, **d)


def verify_model_folder(folder: Path) -> dict[str, Any]:
    """Check a model folder (:func:`semisam.model_folder.verify_model_dir`: files, format, sha256, no
    pickles; the architecture must be a registered one) and return its manifest as a dict. Torch is not
    imported for the built-in architectures: only the weights' bytes are hashed.
    """
    from semisam import model_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise RegistryError("model folder does not exist", folder)
    try:
        man = model_folder.verify_model_dir(folder)
        model_folder.check_arch_known(man.arch, folder / MANIFEST)
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # CheckpointError subclasses ValueError
        raise RegistryError(f"not a valid model folder: {exc}", folder) from exc


class ModelRegistry:
    """Model versions of a :class:`~semisam.store.labeled.LabeledStore` (shares its lock)."""

    #: the registry's folder under the store
    SUBDIR = "models"

    def __init__(self, store: LabeledStore):
        self.store = store
        self.root = store.root / self.SUBDIR
        self.versions_dir = self.root / "versions"

    def verify_folder(self, folder: Path) -> dict[str, Any]:
        """Check a version folder's files; return its manifest (:func:`verify_model_folder`)."""
        return verify_model_folder(folder)

    # ----------------------------------------------------------------- reading
    def versions(self) -> list[ModelVersion]:
        """All registered versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        out = []
        for p in sorted(self.versions_dir.iterdir()):
            if VERSION_RE.match(p.name) and (p / RECORD).is_file():
                out.append(self._load(p.name))
        return out

    def get(self, version: str) -> ModelVersion:
        if not VERSION_RE.match(str(version)) or not (self.versions_dir / version / RECORD).is_file():
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise RegistryError(f"no model version {version!r} (versions: {known})", self.root)
        return self._load(version)

    def _load(self, version: str) -> ModelVersion:
        from semisam.store.pool import read_json

        path = self.versions_dir / version
        data = read_json(path / RECORD, "registry record", "registry_record")
        if data["version"] != version:
            raise StoreFormatError(
                f"registry record is damaged: version: names {data['version']!r}, not its folder {version!r}",
                path / RECORD,
            )
        try:
            return ModelVersion.from_json(data, path)
        except (ValueError, TypeError) as exc:
            raise StoreFormatError(f"registry record is damaged: {exc}", path / RECORD) from exc

    def _pointer(self) -> dict[str, Any]:
        from semisam.store.pool import read_json

        path = self.root / ACTIVE
        if not path.is_file():
            return {"active": None, "stack": [], "log": []}
        return read_json(path, "active-version pointer", "active")

    def verified(self, version: str) -> ModelVersion:
        """:meth:`get` plus a check that the version's files are intact: manifest valid, weights present
        and their sha256 equal to the one recorded at registration (what promote and rollback need)."""
        rec = self.get(version)
        self.verify_folder(rec.path)
        actual = sha256_file(rec.path / WEIGHTS)
        if actual != rec.sha256:
            raise RegistryError(
                f"{version}: weights sha256 {actual[:16]}... differs from the {rec.sha256[:16]}... recorded "
                "at registration; the model files were modified after registering, not activated",
                rec.path / WEIGHTS,
            )
        return rec

    def active(self) -> ModelVersion | None:
        """The active version (what SemiSAMSegment runs), or ``None`` before the first promotion."""
        name = self._pointer().get("active")
        return None if name is None else self.get(name)

    def active_path(self) -> Path | None:
        v = self.active()
        return None if v is None else v.path

    # ----------------------------------------------------------------- writing
    def add(
        self,
        model_dir: str | os.PathLike,
        *,
        metrics: dict[str, float] | None = None,
        evaluated_on: list[str] | None = None,
    ) -> ModelVersion:
        """Copy a model folder into the registry as the next version (not active until promoted).

        ``metrics`` are its scores on the validation cases ``evaluated_on`` (default: the store's
        validation split now).
        """
        src = Path(model_dir)
        manifest = self.verify_folder(src)
        with self.store.lock:
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            numbers = [
                int(m.group(1)) for p in self.versions_dir.iterdir() if (m := VERSION_RE.match(p.name))
            ]
            version = f"v{max(numbers, default=0) + 1:04d}"
            staging = _fs.tmp_name(self.versions_dir, version)
            try:
                shutil.copytree(src, staging, ignore=shutil.ignore_patterns(".*", RECORD))
                rec = ModelVersion(
                    version=version,
                    path=self.versions_dir / version,
                    added=_fs.utc_now(),
                    source=str(src.resolve()),
                    arch=manifest.get("arch"),
                    parent=manifest.get("parent"),
                    sha256=sha256_file(staging / WEIGHTS),
                )
                if metrics is not None:
                    on = self.store.validation_ids() if evaluated_on is None else list(evaluated_on)
                    rec.metrics, rec.evaluated_on = _check_metrics(metrics), on
                    rec.evaluated = rec.added
                _fs.atomic_write_json(staging / RECORD, rec.to_json())
                _fs.commit_dir(staging, rec.path)
            except BaseException:
                _fs.remove_leftovers(self.versions_dir)
                raise
        log.info("registered model %s (%s) from %s", version, rec.arch, src)
        return rec

    def record_metrics(
        self, version: str, metrics: dict[str, float], evaluated_on: list[str]
    ) -> ModelVersion:
        """Store ``version``'s metrics on the validation cases ``evaluated_on`` (replacing older ones)."""
        with self.store.lock:
            rec = self.get(version)
            rec.metrics, rec.evaluated_on, rec.evaluated = (
                _check_metrics(metrics),
                list(evaluated_on),
                _fs.utc_now(),
            )
            _fs.atomic_write_json(rec.path / RECORD, rec.to_json())
        return rec

    def promote(self, version: str, *, metric: str = "dice", require_better: bool = True) -> ModelVersion:
        """Make ``version`` active.

        With ``require_better`` (default) the candidate must have ``metric`` higher than the active
        version's, both measured on the same validation cases; otherwise :class:`RegistryError` says
        why and nothing changes.
        """
        with self.store.lock:
            cand = self.verified(version)
            ptr = self._pointer()
            current = ptr.get("active")
            if current == version:
                return cand
            if require_better and current is not None:
                _check_better(cand, self.get(current), metric)
            ptr["stack"] = [*ptr.get("stack", []), current] if current else list(ptr.get("stack", []))
            ptr["active"] = version
            ptr.setdefault("log", []).append({"time": _fs.utc_now(), "event": "promote", "active": version})
            _fs.atomic_write_json(self.root / ACTIVE, ptr)
        log.info("promoted model %s (was %s)", version, current)
        return cand

    def rollback(self) -> ModelVersion:
        """Make the previously active version active again; returns it."""
        with self.store.lock:
            ptr = self._pointer()
            stack = list(ptr.get("stack", []))
            if not stack:
                raise RegistryError(
                    "nothing to roll back to: no version was active before this one", self.root
                )
            previous = stack.pop()
            rec = self.verified(previous)
            ptr.update(active=previous, stack=stack)
            ptr.setdefault("log", []).append({"time": _fs.utc_now(), "event": "rollback", "active": previous})
            _fs.atomic_write_json(self.root / ACTIVE, ptr)
        log.info("rolled back to model %s", previous)
        return rec

    def leftovers(self) -> list[Path]:
        out = []
        for d in (self.root, self.versions_dir):
            if d.is_dir():
                out += [p for p in d.iterdir() if p.name.startswith(".") and ".tmp" in p.name]
        return out


def _check_metrics(metrics: dict[str, float]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise RegistryError(f"metric {k!r} must be a number, got {v!r}") from None
    return out


def _check_better(cand: ModelVersion, active: ModelVersion, metric: str) -> None:
    for v in (cand, active):
        if metric not in v.metrics:
            raise RegistryError(
                f"{v.version} has no {metric!r} on the validation split; evaluate it first "
                "(ModelRegistry.record_metrics) or promote with require_better=False"
            )
    if sorted(cand.evaluated_on) != sorted(active.evaluated_on):
        raise RegistryError(
            f"{cand.version} was evaluated on {len(cand.evaluated_on)} validation case(s) and "
            f"{active.version} on {len(active.evaluated_on)} different one(s); evaluate both on the "
            "current validation split before comparing"
        )
    if not cand.metrics[metric] > active.metrics[metric]:
        raise RegistryError(
            f"{cand.version} {metric} {cand.metrics[metric]:.4f} is not better than the active "
            f"{active.version}'s {active.metrics[metric]:.4f}; not promoted"
        )
