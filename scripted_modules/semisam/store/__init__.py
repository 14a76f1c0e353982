"""The loop's memory: labeled cases, the unlabeled pool, the fixed validation split and model versions.

Everything lives in one folder of plain files (NIfTI images and masks, JSON records) that a person can
inspect and copy; every write is crash-safe and serialised by a lock (see :mod:`semisam.store.labeled`).
Importable without torch.

Example (what SemiSAMSegment's *Accept* and the training job do)::

    store = LabeledStore.open_or_create("~/semisam-store", {1: "nodule"}, modality="CT")
    rec = store.add_case(volume, mask_zyx, Provenance(annotator="JD", prompts={"box": 2}),
                         proposal=specialist_mask_zyx)          # committed when this returns
    train, val = store.train_ids(), store.validation_ids()     # the fixed split
    case = store.read_case(train[0])                          # .image / .mask: Volume (Z, Y, X)
    v = store.models.add(model_dir, metrics={"dice": 0.81}, evaluated_on=val)
    store.models.promote(v.version)                           # only if better than the active one
    store.models.active_path()                                # the folder SemiSAMSegment loads

Other parts: :mod:`~semisam.store.split` (the split rule and why it is stable),
:mod:`~semisam.store.decathlon` (MSD / nnU-Net import and export), :mod:`~semisam.store.check`
(``semisam store check``), :mod:`~semisam.store.drill` (the crash drill used by the tests).
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
