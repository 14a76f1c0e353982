"""Errors of the labeled-set store and the model registry; each message names the folder or file."""

from __future__ import annotations

import os


class StoreError(ValueError):
    """Something about a store (or a file going into it) is wrong. ``path`` names the file or folder."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The folder holds no store (no ``semisam_store.json``)."""


class StoreExistsError(StoreError):
    """``init`` was asked to create a store where one (or other files) already exist."""


class StoreFormatError(StoreError):
    """The store was written by a newer semisam (format version too high) or its metadata is damaged."""


class LabelError(StoreError):
    """A mask holds label values that are not declared in the store's label table (or tables differ)."""


class CaseNotFoundError(StoreError, KeyError):
    """No case (or unlabeled scan) with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return ValueError.__str__(self)


class CaseExistsError(StoreError):
    """A case (or unlabeled scan) with that id is already in the store."""


class EmptyStoreError(StoreError):
    """An operation needs at least one labeled case and the store has none."""


class RegistryError(StoreError):
    """A model version is invalid, unknown, or cannot be promoted / rolled back."""
