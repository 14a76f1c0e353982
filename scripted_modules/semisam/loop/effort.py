"""The time model: what one case costs a radiologist, in interactions and seconds.

Every number the simulation reports in seconds comes from here, so the model is stated once:

============================  =========  ==================================================================
interaction                   seconds    why
============================  =========  ==================================================================
box on a slice                4          find the slice, drag a rectangle around the structure
+/- point                     2          one click (the slice is already on screen)
slice drawn by hand           30         paint / outline one slice in Segment Editor
compute                       measured   seconds the user waits: the specialist's auto-segment and every
                                         propagation (slice embeddings are precomputed in the background
                                         while the user looks at the scan, as the product does, and are
                                         not counted)
============================  =========  ==================================================================

The constants are assumptions, not measurements of people; change them with :class:`TimeModel` (the CLI
prints the model it used in its summary line).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TimeModel:
    """Seconds per interaction (see the module docstring for the reasons)."""

    box_s: float = 4.0
    point_s: float = 2.0
    hand_slice_s: float = 30.0

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Effort:
    """Interactions spent on one case, and the compute seconds the user waited.

    Attributes:
        boxes: boxes placed (one per prompted slice at most).
        points_pos, points_neg: positive / negative points placed.
        hand_slices: slices the annotator drew by hand (what prompts did not fix within the budget).
        compute_s: measured wall-clock seconds of auto-segment and propagation.
    """

    boxes: int = 0
    points_pos: int = 0
    points_neg: int = 0
    hand_slices: int = 0
    compute_s: float = 0.0

    @property
    def points(self) -> int:
        return self.points_pos + self.points_neg

    @property
    def prompts(self) -> int:
        """Boxes and points (what the prompt budget counts)."""
        return self.boxes + self.points

    def interaction_s(self, model: TimeModel) -> float:
        """Simulated human seconds: boxes, points and hand-drawn slices priced by ``model``."""
        return self.boxes * model.box_s + self.points * model.point_s + self.hand_slices * model.hand_slice_s

    def total_s(self, model: TimeModel) -> float:
        """Human seconds plus the measured compute seconds: the case's effort."""
        return self.interaction_s(model) + self.compute_s

    def prompt_counts(self) -> dict[str, int]:
        """Counts by kind, as :class:`semisam.store.Provenance` ``prompts`` records them."""
        counts = {"box": self.boxes, "point+": self.points_pos, "point-": self.points_neg}
        counts["hand_slice"] = self.hand_slices
        return {k: v for k, v in counts.items() if v}

    def to_json(self, model: TimeModel) -> dict[str, float | int]:
        return {
            "boxes": self.boxes,
            "points": self.points,
            "points_pos": self.points_pos,
            "points_neg": self.points_neg,
            "hand_slices": self.hand_slices,
            "simulated_s": round(self.interaction_s(model), 3),
            "compute_s": round(self.compute_s, 3),
            "effort_s": round(self.total_s(model), 3),
        }
