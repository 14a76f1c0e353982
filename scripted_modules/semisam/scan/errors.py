"""The errors of reading, checking and writing scans and masks (re-exported by :mod:`semisam.scan.volume`).

Every one names the file (``path``) when there is one, so a message shown to a user says which scan.
"""

from __future__ import annotations

import os


class VolumeError(ValueError):
    """A scan or mask could not be read, written or used. ``path`` names the file, if any."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ScanNotFoundError(VolumeError, FileNotFoundError):
    """The file or folder does not exist."""


class ScanReadError(VolumeError):
    """The file exists but cannot be decoded (unreadable, corrupt header, truncated data, bad format)."""


class NotA3DScalarError(VolumeError):
    """The image is 2D, 4D, a single slice, or has several components per voxel (RGB, vector)."""


class NonFiniteVoxelsError(VolumeError):
    """The image holds NaN or infinite voxels."""


class BadDirectionError(VolumeError):
    """The voxel axes are not orthogonal (sheared) or the direction matrix is singular."""


class GridTooLargeError(VolumeError):
    """Resampling the scan would make an array too large to allocate (absurd spacing in a header)."""


class GeometryMismatchError(VolumeError):
    """A mask (or second image) is not on the grid of its reference image."""


class MaskValueError(VolumeError):
    """A mask holds values that are not non-negative integer labels."""
