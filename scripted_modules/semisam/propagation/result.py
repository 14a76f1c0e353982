"""What a propagation returns (:class:`PropagationResult`), shared by the 2D engine and SAM 2's memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PropagationResult:
    """What :func:`propagate` returns.

    Attributes:
        mask: ``(Z, Y, X)`` uint8, 1 = structure, on the volume's grid.
        confidence: ``(n_slices,)`` float32 along the axis: per-slice confidence in [0, 1] (predicted IoU
            x lesion likeness for 2D models; SAM 2's object score), ``NaN`` where nothing was segmented.
        source: ``(n_slices,)`` int: the key slice each slice's mask came from (-1: none; for a slice
            between two key slices, the nearer one).
        stops: ``{"<key>:<+1|-1>": reason}`` why each track ended before the next key slice.
        key_slices: the prompted slices.
        flagged: slices to look at first, each with why (``{slice: reason}``): between two key slices,
            the two tracks disagree (Dice < ``min_agreement``) or only one reached the slice; or every
            model answer was refused and the registered previous mask stands for the slice.
    """

    mask: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    stops: dict[str, str]
    key_slices: list[int]
    flagged: dict[int, str] = field(default_factory=dict)

    @property
    def review_order(self) -> list[int]:
        """Propagated (non-key) slices in the order to check them: flagged ones first, each group by
        rising confidence (the "next slice to fix" is ``review_order[0]``)."""
        keys = set(self.key_slices)
        free = [s for s in self.slices if s not in keys]
        return sorted(free, key=lambda s: (s not in self.flagged, float(self.confidence[s])))

    @property
    def slices(self) -> list[int]:
        """Slices with a non-empty mask, in order."""
        return [int(i) for i in np.flatnonzero(~np.isnan(self.confidence))]

    def summary(self) -> dict:
        """JSON-friendly per-slice confidence and stopping reasons."""
        return {
            "key_slices": self.key_slices,
            "slices": {
                str(i): {"confidence": round(float(self.confidence[i]), 4), "from_key": int(self.source[i])}
                for i in self.slices
            },
            "stops": self.stops,
            "flagged": {str(k): v for k, v in sorted(self.flagged.items())},
            "review_order": self.review_order,
        }
