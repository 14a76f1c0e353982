"""The loop's memory: labeled cases, the unlabeled pool, the fixed validation split and model versions.

Everything lives in one folder of plain files (NIfTI images and masks, JSON records) that a person can
inspect and copy; every write is crash-safe and serialised by a lock (see :mod:`semisam.store.labeled`).
Importable without torch.
"""

from semisam.store.errors import (
    CaseExistsError,
    CaseNotFoundError,
    EmptyStoreError,
    LabelError,
    RegistryError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from semisam.store.labeled import FORMAT_VERSION, LabeledCase, LabeledStore, dice
from semisam.store.records import CaseRecord, MaskRevision, Provenance, UnlabeledRecord
from semisam.store.registry import ModelRegistry, ModelVersion

__all__ = [
    "FORMAT_VERSION",
    "CaseExistsError",
    "CaseNotFoundError",
    "CaseRecord",
    "EmptyStoreError",
    "LabelError",
    "LabeledCase",
    "LabeledStore",
    "MaskRevision",
    "ModelRegistry",
    "ModelVersion",
    "Provenance",
    "RegistryError",
    "StoreError",
    "StoreExistsError",
    "StoreFormatError",
    "StoreNotFoundError",
    "UnlabeledRecord",
    "dice",
]
