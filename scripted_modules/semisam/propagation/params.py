"""The few parameters of sparse-slice propagation, each with the reason for its value.

The lesion-step values were chosen on the three development cases only (lung1, brain1, breast1); the
thin-slice ones (``min_agreement``, ``min_ncc``, ``max_carried_mm``) were set from the reasons given below,
before looking at results, and checked on three AAL structures (Caudate_L, Thalamus_L, Pallidum_L). All
are meant to be principled (units, probabilities) rather than tuned per case. ``Testing/benchmarks/propagation.py``
prints them beside the Dice they give.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from semisam.propagation.continuity import REBOUND_RATIO

#: what a generalist may look at (:attr:`PropagationParams.field_of_view`)
FIELDS_OF_VIEW = ("auto", "whole")


@dataclass(frozen=True)
class PropagationParams:
    """Knobs of :func:`semisam.propagation.propagate` (2D models).

    Attributes:
        min_score: a propagated slice whose model-predicted IoU is below this ends the track; SAM-family
            IoU heads put real structures above ~0.7 and "nothing here" guesses below ~0.5.
        min_likeness: a propagated mask whose pixels look less like the key slice's lesion than like its
            surroundings (mean posterior of the key-slice intensity model < 0.5: the Bayes boundary with
            equal priors) ends the track.
        box_margin_mm: margin added around the previous slice's mask box for the "previous box" prompt
            (the naive baseline uses 4 px ~ 2.3 mm at 0.57 mm pixels).
        search_slope: how far beyond the previous mask's box the lesion-intensity candidate may reach on
            the next slice, in slice spacings: a lesion surface at angle a to the slice plane moves
            in-plane by ``spacing / tan(a)``; 4 covers surfaces down to 14 degrees (brain1's tumour
            grows 20 mm across one 6.5 mm step). Never less than ``min_search_mm``.
        min_search_mm: floor of the search distance for thin slices (mm).
        min_overlap: the new mask must overlap the previous mask's footprint grown by ``search_mm`` by at
            least this fraction of its area (continuity in 3D), else the track ends.
        max_area_ratio: the new mask's area may change by at most this factor (either way) from the
            previous slice's; a bigger jump means the prompt grabbed a neighbouring structure, or only a
            remnant (partial volume, a vessel) is left where the lesion ended. brain1's largest real jump
            between neighbours is 3.4x (247 -> 842 px).
        min_agreement: on thin slices (:mod:`semisam.propagation.follow`) an answer whose Dice with the
            previous mask carried onto the slice by registration is below this is refused: less than half
            of it is where the images say the structure went. True neighbouring cross-sections of a thin
            slicing overlap with Dice >= 0.68 (discs offset by half a radius), a neighbouring structure
            or a leak into one with Dice near 0 (drift) to 2/3 (mask doubled).
        min_ncc: below this normalised cross-correlation of the two slices around the structure the
            images no longer show the same tissue (less than a quarter of the variance shared: 0.5^2) and
            a carried mask proves nothing.
        max_carried_mm: how far (mm) a track may go on carried masks alone, with every answer refused: a
            few slices bridge a model hiccup; beyond 3 mm the structure has changed too much for a
            registration of neighbouring slices to vouch for it.
        rebound_ratio: beyond the outermost key slice a thin track whose (three-slice median) area,
            after falling, rises to this many times its lowest value ends at its narrowest slice
            (:mod:`semisam.propagation.continuity`; a convex structure's area does not rebound); 0 turns
            the rule off. It stops single-box tracks that run into a look-alike neighbour. Measured with
            ``Testing/benchmarks/propagation.py`` (one box, median ratio to the oracle, rule off -> on):
            development structures 0.648 -> 0.651 (thalamus axial 0.45 -> 0.79, pallidum coronal
            0.39 -> 0.36), the other four AAL structures 0.299 -> 0.412 (amygdala coronal 0.07 -> 0.46,
            caudate R axial 0.44 -> 0.67; the non-convex insula unchanged, its tracks end before the
            rule acts); confidence-vs-Dice rank correlation 0.32 -> 0.47. Lesion scans are not thin and
            never use it.
        field_of_view: ``"auto"``: a key slice's box is answered on the whole slice and on a view around
            it, and the answer that fills the box better is kept (:mod:`semisam.generalists.view`); tracks
            answer on whole slices (why: :func:`semisam.propagation.engine._track_step`). ``"whole"``: the
            whole slice only (one encode per slice; the model's normal path).
    """

    min_score: float = 0.5
    min_likeness: float = 0.5
    box_margin_mm: float = 2.0
    search_slope: float = 4.0
    min_search_mm: float = 5.0
    min_overlap: float = 0.5
    max_area_ratio: float = 4.0
    refine: bool = True
    min_agreement: float = 0.5
    min_ncc: float = 0.5
    max_carried_mm: float = 3.0
    rebound_ratio: float = REBOUND_RATIO
    field_of_view: str = "auto"

    def __post_init__(self) -> None:
        if self.field_of_view not in FIELDS_OF_VIEW:
            raise ValueError(
                f"field_of_view must be one of {', '.join(FIELDS_OF_VIEW)}, got {self.field_of_view!r}"
            )

    def max_carried(self, slice_mm: float) -> int:
        """``max_carried_mm`` in slices ``slice_mm`` apart (at least 1)."""
        return max(1, int(self.max_carried_mm // max(slice_mm, 1e-6)))

    def search_mm(self, slice_mm: float) -> float:
        """Search distance (mm) beyond the previous box for slices ``slice_mm`` apart."""
        return max(self.min_search_mm, self.search_slope * slice_mm)

    def to_json(self) -> dict:
        return asdict(self)
