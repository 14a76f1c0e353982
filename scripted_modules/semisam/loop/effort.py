"""The time model: what one case costs a radiologist, in interactions and seconds.

Every number the simulation reports in seconds comes from here, so the model is stated once:

============================  =========  ==================================================================
interaction                   seconds    why
============================  =========  ==================================================================
box on a slice                4          find the slice, drag a rectangle around the structure
+/- point                     2          one click (the slice is already on screen)
island removed                2          one click with Segment Editor's Islands effect ("Remove
                                         selected island") on a piece of the mask that touches no
                                         structure: it goes on every slice it spans at once
slice fixed by hand           30 x f     paint / outline one slice in Segment Editor: drawing it from
                                         nothing costs 30 s; touching up a nearly right slice costs the
                                         share of it that is wrong, f = 1 - the slice's Dice before the
                                         fix, at least ``touch_up_min`` (0.2: a 6 s brush stroke and a
                                         look, however small the error)
compute                       measured   seconds the user waits: the specialist's auto-segment and every
                                         propagation (slice embeddings are precomputed in the background
                                         while the user looks at the scan, as the product does, and are
                                         not counted)
============================  =========  ==================================================================

The constants are assumptions, not measurements of people; change them with :class:`TimeModel` (the CLI
prints the model it used in its summary line). Pricing a hand fix by the slice's error credits a proposal
that is nearly right on a slice (it is touched up, not redrawn) but never below ``touch_up_min`` of a
drawn slice, so a slice a proposal gets wrong costs what drawing it costs; ``touch_up_min=1`` restores the
flat price of every hand-drawn slice. Edit time growing with the share of the contour that must be changed
is how editing tools are usually compared (a slice at Dice 0.9 needs a tenth of its outline redrawn); the
linear form and the floor are this model's assumptions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TimeModel:
    """Seconds per interaction (see the module docstring for the reasons)."""

    box_s: float = 4.0
    point_s: float = 2.0
    island_s: float = 2.0
    hand_slice_s: float = 30.0
    touch_up_min: float = 0.2

    def hand_share(self, slice_dice: float) -> float:
        """Share of :attr:`hand_slice_s` that fixing a slice whose Dice was ``slice_dice`` costs."""
        return min(1.0, max(self.touch_up_min, 1.0 - float(slice_dice)))

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class Effort:
    """Interactions spent on one case, and the compute seconds the user waited.

    Attributes:
        boxes: boxes placed (one per prompted slice at most).
        points_pos, points_neg: positive / negative points placed.
        islands: pieces of the mask removed with one click each (Segment Editor's Islands effect): false
            positives that touch no structure, whatever slices they span.
        hand_slices: slices the annotator drew by hand (what prompts did not fix within the budget).
        hand_dice: each hand-fixed slice's Dice before the fix (what :meth:`TimeModel.hand_share`
            prices); a record without it (an older run) prices every hand slice in full.
        compute_s: measured wall-clock seconds of auto-segment and propagation.
    """

    boxes: int = 0
    points_pos: int = 0
    points_neg: int = 0
    islands: int = 0
    hand_slices: int = 0
    hand_dice: list[float] = field(default_factory=list)
    compute_s: float = 0.0

    @property
    def points(self) -> int:
        return self.points_pos + self.points_neg

    @property
    def prompts(self) -> int:
        """Boxes and points (what the prompt budget counts)."""
        return self.boxes + self.points

    def add_hand_slice(self, slice_dice: float) -> None:
        """Count one slice fixed by hand whose Dice was ``slice_dice`` before the fix."""
        self.hand_slices += 1
        self.hand_dice.append(float(slice_dice))

    def hand_work(self, model: TimeModel) -> float:
        """Hand-fixed slices in units of a slice drawn from nothing (see :meth:`TimeModel.hand_share`)."""
        unpriced = self.hand_slices - len(self.hand_dice)  # counted without their Dice: full price
        return sum(model.hand_share(d) for d in self.hand_dice) + max(0, unpriced)

    def interaction_s(self, model: TimeModel) -> float:
        """Simulated human seconds: boxes, points and hand-fixed slices priced by ``model``."""
        hand = self.hand_work(model) * model.hand_slice_s
        clicks = self.points * model.point_s + self.islands * model.island_s
        return self.boxes * model.box_s + clicks + hand

    def total_s(self, model: TimeModel) -> float:
        """Human seconds plus the measured compute seconds: the case's effort."""
        return self.interaction_s(model) + self.compute_s

    def prompt_counts(self) -> dict[str, int]:
        """Counts by kind, as :class:`semisam.store.Provenance` ``prompts`` records them."""
        counts = {"box": self.boxes, "point+": self.points_pos, "point-": self.points_neg}
        counts["island"] = self.islands
        counts["hand_slice"] = self.hand_slices
        return {k: v for k, v in counts.items() if v}

    def to_json(self, model: TimeModel) -> dict[str, float | int]:
        return {
            "boxes": self.boxes,
            "points": self.points,
            "points_pos": self.points_pos,
            "points_neg": self.points_neg,
            "islands": self.islands,
            "hand_slices": self.hand_slices,
            "hand_work": round(self.hand_work(model), 4),
            "simulated_s": round(self.interaction_s(model), 3),
            "compute_s": round(self.compute_s, 3),
            "effort_s": round(self.total_s(model), 3),
        }
