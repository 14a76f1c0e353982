"""File names of a store's layout (documented in docs/design.md), in one place below every store module."""

from __future__ import annotations

#: Version of the on-disk layout this code writes; a store with a higher number is refused.
FORMAT_VERSION = 1
STORE_FILE = "semisam_store.json"
CASE_FILE = "case.json"
MASK_FILE = "mask.nii.gz"
