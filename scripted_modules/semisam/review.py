"""The order in which a case's slices are worth checking ("Next uncertain slice"), kept across edits.

*Auto-segment* ranks every slice by the specialist's uncertainty (the mean normalised entropy of its
class probabilities). A *Propagate* across slices then replaces the slices it answered with the
generalist's answers, and the specialist's uncertainty says nothing about those any more: they are
ranked by the generalist's own confidence instead (its predicted IoU, the number the IoU head of an
adapted generalist is taught to make right), slices whose two tracks disagreed first. They come before
the specialist's remaining slices because they are the ones that just changed, where the user is working.

Both SemiSAMSegment's *Next uncertain slice* and the simulated annotator (:mod:`semisam.loop.annotator`)
follow this order, so the loop measures the review the product offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only the type: SemiSAMSegment's Logic reads review orders before torch is installed
    from semisam.propagation.result import PropagationResult

#: The source of a slice's rank.
SPECIALIST = "specialist"
GENERALIST = "generalist"


@dataclass
class ReviewOrder:
    """Slices ``k`` (array axis 0 of ``(Z, Y, X)``) to check, most uncertain first.

    Attributes:
        slices: slice indices, most uncertain first, each once.
        uncertainty: ``(len(slices),)`` in [0, 1]: the specialist's slice uncertainty, or 1 - the
            generalist's confidence for a slice a propagation answered.
        source: :data:`SPECIALIST` or :data:`GENERALIST` per slice.
    """

    slices: list[int] = field(default_factory=list)
    uncertainty: list[float] = field(default_factory=list)
    source: list[str] = field(default_factory=list)

    @classmethod
    def from_specialist(
        cls, order: Sequence[int], slice_uncertainty: Sequence[float] | np.ndarray | None = None
    ) -> ReviewOrder:
        """The specialist's ranking: ``order`` (slices ``k``) and ``slice_uncertainty`` indexed by ``k``
        (``None``: unknown, shown as NaN)."""
        slices = [int(k) for k in order]
        unc = [float("nan") if slice_uncertainty is None else float(slice_uncertainty[k]) for k in slices]
        return cls(slices, unc, [SPECIALIST] * len(slices))

    def after_propagation(self, result: PropagationResult, axis: int = 0) -> ReviewOrder:
        """The order once ``result`` (a propagation across slices of axis ``axis``) is written.

        Only axial propagations (``axis == 0``, slices ``k``) re-rank: the order is over slices ``k``,
        and a propagation across another axis answers a column of every ``k`` slice at once.
        """
        if axis != 0:
            return self
        answered = [int(s) for s in result.review_order]
        conf = np.asarray(result.confidence, dtype=float)
        unc = [float(np.clip(1.0 - conf[s], 0.0, 1.0)) if np.isfinite(conf[s]) else 1.0 for s in answered]
        seen = set(answered)
        rest = [i for i, s in enumerate(self.slices) if s not in seen]
        return ReviewOrder(
            answered + [self.slices[i] for i in rest],
            unc + [self.uncertainty[i] for i in rest],
            [GENERALIST] * len(answered) + [self.source[i] for i in rest],
        )

    def __len__(self) -> int:
        return len(self.slices)

    def next_after(self, current: int | None) -> int | None:
        """The slice after ``current`` (the first when ``current`` is not in the order; wraps around),
        ``None`` for an empty order."""
        if not self.slices:
            return None
        if current not in self.slices:
            return self.slices[0]
        return self.slices[(self.slices.index(current) + 1) % len(self.slices)]
