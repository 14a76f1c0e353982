"""The JSON records a store keeps beside each case and scan, as documented dataclasses.

A case folder ``cases/<case_id>/`` holds ``image.nii.gz``, its mask file(s) and ``case.json`` (a
:class:`CaseRecord`). A scan of the unlabeled pool, ``unlabeled/<scan_id>/``, holds ``scan.json`` (an
:class:`UnlabeledRecord`) and either ``image.nii.gz`` (a copy) or a reference to a file elsewhere.
Paths inside records are relative to their own folder, so a store can be moved or copied as a whole.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from semisam.store.errors import StoreError

#: Case and scan ids: file-name safe, not hidden, at most 100 characters.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

SPLITS = ("train", "validation")


def check_id(case_id: str, what: str = "case id") -> str:
    """Return ``case_id`` if it is a valid id, else raise :class:`StoreError` saying why."""
    if not isinstance(case_id, str) or not ID_PATTERN.match(case_id) or case_id.endswith(".tmp"):
        raise StoreError(
            f"invalid {what} {case_id!r}: use letters, digits, '_', '-', '.', starting with a letter or "
            "digit, at most 100 characters"
        )
    return case_id


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StoreError(f"provenance {name} {value!r} is not an ISO 8601 time") from exc


@dataclass
class Provenance:
    """Who made an accepted mask, how, and from what.

    Attributes:
        annotator: the person who accepted the mask (free text, e.g. initials).
        started, finished: ISO 8601 times (or ``datetime`` s) the annotation began and was accepted.
        prompts: number of prompts by kind, e.g. ``{"box": 2, "point+": 3, "point-": 1}``.
        model_version: registry version of the specialist that proposed the first mask, if any.
        proposal_dice: Dice (0..1, foreground vs background) between that proposal and the accepted mask.
        tool: what produced the record (``semisam 0.1.0``, ``import:<dataset>``...).
        notes: free text.
    """

    annotator: str | None = None
    started: str | None = None
    finished: str | None = None
    prompts: dict[str, int] = field(default_factory=dict)
    model_version: str | None = None
    proposal_dice: float | None = None
    tool: str | None = None
    notes: str | None = None

    def __post_init__(self) -> None:
        for name in ("started", "finished"):
            value = getattr(self, name)
            if isinstance(value, datetime):  # accept datetimes; store ISO text (readable JSON)
                setattr(self, name, value.isoformat())
        t0 = _parse_time(self.started, "started")
        t1 = _parse_time(self.finished, "finished")
        if t0 and t1 and t1 < t0:
            raise StoreError(f"provenance finished {self.finished} is before started {self.started}")
        for kind, n in self.prompts.items():
            if not isinstance(n, int) or n < 0:
                raise StoreError(f"provenance prompt count for {kind!r} must be an integer >= 0, got {n!r}")
        if self.proposal_dice is not None and not 0.0 <= float(self.proposal_dice) <= 1.0:
            raise StoreError(f"provenance proposal_dice must be within 0..1, got {self.proposal_dice}")

    @property
    def n_prompts(self) -> int:
        """Total number of prompts of all kinds."""
        return sum(self.prompts.values())

    @property
    def seconds(self) -> float | None:
        """Annotation time in seconds (``finished - started``), when both are known."""
        t0, t1 = _parse_time(self.started, "started"), _parse_time(self.finished, "finished")
        return None if t0 is None or t1 is None else (t1 - t0).total_seconds()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_prompts"] = self.n_prompts
        d["seconds"] = self.seconds
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Provenance:
        d = dict(d or {})
        d.pop("n_prompts", None)
        d.pop("seconds", None)
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__}
        if d:  # keep unknown keys readable rather than dropping a person's notes
            extra = ", ".join(f"{k}={v}" for k, v in sorted(d.items()))
            known["notes"] = f"{known.get('notes') or ''} [{extra}]".strip()
        return cls(**known)


@dataclass
class MaskRevision:
    """An earlier mask of a case, kept when the mask was replaced.

    Attributes:
        revision: 1 for the mask the case was added with, then 2, 3...
        file: its file name inside the case folder.
        replaced: ISO time it stopped being current.
        provenance: how that mask was made.
    """

    revision: int
    file: str
    replaced: str
    provenance: Provenance

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "file": self.file,
            "replaced": self.replaced,
            "provenance": self.provenance.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MaskRevision:
        return cls(d["revision"], d["file"], d["replaced"], Provenance.from_json(d.get("provenance")))


@dataclass
class CaseRecord:
    """``case.json``: one labeled case.

    Attributes:
        case_id: the folder name under ``cases/``.
        seq: 1-based order in which cases were committed to this store (unique, never reused).
        split: ``"train"`` or ``"validation"``, decided once when the case was added (never changed).
        split_rule: how ``split`` was decided (``"every-5th"`` rule, ``"explicit"``, ``"import"``).
        added: ISO time of the add.
        image: image file name in the case folder (NIfTI).
        mask: current mask file name in the case folder (NIfTI, uint8/uint16 labels).
        mask_revision: number of the current mask (1 = as added).
        labels: voxel count of every label value present in the current mask (``{"1": 837}``).
        shape_zyx, spacing_mm: the image's array shape (Z, Y, X) and voxel size (i, j, k) in mm.
        modality: ``CT``, ``MR``... when known.
        source: where the image came from (original file name, for people; not used to read).
        provenance: how the current mask was made.
        history: earlier masks, oldest first.
        unlabeled_id: the unlabeled-pool scan this case was made from, if any (it left the pool).
    """

    case_id: str
    seq: int
    split: str
    split_rule: str
    added: str
    image: str
    mask: str
    mask_revision: int
    labels: dict[str, int]
    shape_zyx: list[int]
    spacing_mm: list[float]
    modality: str | None = None
    source: str | None = None
    provenance: Provenance = field(default_factory=Provenance)
    history: list[MaskRevision] = field(default_factory=list)
    unlabeled_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["provenance"] = self.provenance.to_json()
        d["history"] = [h.to_json() for h in self.history]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseRecord:
        d = dict(d)
        prov = Provenance.from_json(d.pop("provenance", None))
        hist = [MaskRevision.from_json(h) for h in d.pop("history", [])]
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        rec = cls(**fields, provenance=prov, history=hist)
        if rec.split not in SPLITS:
            raise StoreError(f"split {rec.split!r} is not one of {SPLITS}")
        return rec


@dataclass
class UnlabeledRecord:
    """``scan.json``: one scan of the unlabeled pool.

    Attributes:
        scan_id: the folder name under ``unlabeled/``.
        seq: 1-based order of registration.
        added: ISO time.
        image: file name inside the scan folder when the scan was copied, else ``None``.
        reference: path of the scan outside the store when it was registered by reference (kept as
            given, made absolute: a moved store still finds it; a moved scan is reported missing).
        shape_zyx, spacing_mm: array shape (Z, Y, X) and voxel size (i, j, k) in mm.
        modality: when known.
        source: original file name.
    """

    scan_id: str
    seq: int
    added: str
    image: str | None
    reference: str | None
    shape_zyx: list[int]
    spacing_mm: list[float]
    modality: str | None = None
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnlabeledRecord:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
