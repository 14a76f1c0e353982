"""One case's editing session: the prompts a user has placed, their propagation, and how each propagation
is written into the case's mask. SemiSAMSegment's *Propagate* and the simulated annotator of
``semisam simulate`` both run it, so the loop measures the code the user runs.

* **Prompts** go into one :class:`~semisam.propagation.state.PropagationState`. :meth:`EditingSession.sync`
  brings it up to the prompts wanted now: new ones are added (the engine then recomputes only the range
  they affect); a prompt taken back or moved rebuilds the state (slice embeddings stay in the shared
  cache, so that costs decoder calls, not encoder runs).
* **Writing** (:meth:`EditingSession.write`): a propagation changes the mask only inside the *propagated
  range* along the slice axis, from the first to the last slice that the new mask, a key slice, or this
  session's previous propagation into the same target touched; inside it the merge rule
  (:class:`semisam.merge.MergeRule`) decides. A propagation with *Propagate across slices* off answers and
  writes the prompted slices only (``KEY_SLICES``) and widens no later range.
* **Undo** (:meth:`EditingSession.undo`): the last propagation's prompts are taken back and its target's
  range is what it was before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from semisam.merge import MergeOutcome, MergeRule, propagated_range, write_propagation
from semisam.prompts import Prompt

Range = tuple[int, int]


@dataclass
class Written:
    """What :meth:`EditingSession.write` did: the merged ``(Z, Y, X)`` mask, the inclusive slice range
    ``(lo, hi)`` along the axis it covered, and the slices it replaced (``outcome.replaced``)."""

    outcome: MergeOutcome
    range: Range

    @property
    def mask(self) -> np.ndarray:
        return self.outcome.mask

    @property
    def replaced(self) -> list[int]:
        return self.outcome.replaced


@dataclass
class _Step:
    """One written propagation, for :meth:`EditingSession.undo`."""

    added: list[Prompt]
    target: str
    previous: Range | None
    across: bool


@dataclass
class EditingSession:
    """The corrections of one case along one slice axis.

    Attributes:
        model: the generalist (:class:`~semisam.generalists.base.PromptableModel`).
        volume: the scan (:class:`~semisam.scan.volume.Volume`, voxels ``(Z, Y, X)``).
        axis: slice axis of every prompt (``axial``, ``coronal``, ``sagittal``).
        window: intensity window (preset name, :class:`~semisam.scan.intensity.IntensityWindow` or ``None``:
            by modality).
        cache: slice-embedding cache shared with the case's other sessions (``None``: the state's own).
        modality: ``"CT"`` / ``"MR"`` for the default window.
        scan_id: names the scan in the embedding cache's keys.
        written: target name -> the range the last propagation across slices wrote there (kept when the
            state is rebuilt; pass an earlier session's to carry it over).
        applied: prompts in the state, in the order they were added.
        state: the propagation state (``None`` until the first prompt or :meth:`ensure_state`).
    """

    model: Any
    volume: Any
    axis: str = "axial"
    window: Any = None
    cache: Any = None
    modality: str | None = None
    scan_id: str | None = None
    written: dict[str, Range] = field(default_factory=dict)
    applied: list[Prompt] = field(default_factory=list)
    state: Any = None
    _history: list[_Step] = field(default_factory=list)
    _pending: list[Prompt] = field(default_factory=list)

    # ------------------------------------------------------------------ prompts
    def prompt(
        self,
        slice_index: int,
        box: tuple[int, int, int, int] | None = None,
        point: tuple[int, int] | None = None,
        positive: bool = True,
    ) -> Prompt:
        """A validated :class:`~semisam.prompts.Prompt` on this session's axis (slice pixel coordinates
        ``(column, row)``); raises :class:`~semisam.prompts.PromptError` for a slice, box or point
        outside the volume."""
        from semisam.prompts import make_prompt

        return make_prompt(self.axis, self.volume.shape, slice_index, box, point, positive)

    def ensure_state(self):
        """The propagation state (a fresh one, nothing encoded yet, when there is none)."""
        if self.state is None:
            self._rebuild([])
        return self.state

    def _rebuild(self, prompts: list[Prompt]) -> None:
        from semisam.propagation import add_prompts, init_state

        cache = self.cache if self.cache is not None else (self.state.encoder.cache if self.state else None)
        self.state = init_state(
            self.model,
            self.volume,
            self.axis,
            window=self.window,
            cache=cache,
            modality=self.modality,
            scan_id=self.scan_id,
        )
        self.applied = []
        if prompts:
            add_prompts(self.state, list(prompts))
            self.applied = list(prompts)

    def add(self, prompts: list[Prompt]) -> None:
        """Add prompts (validated :class:`~semisam.prompts.Prompt` on this axis) to the state."""
        from semisam.propagation import add_prompts

        self.ensure_state()
        if prompts:
            add_prompts(self.state, list(prompts))
            self.applied += list(prompts)
            self._pending += list(prompts)

    def sync(self, wanted: list[Prompt]) -> tuple[int, bool]:
        """Bring the state up to ``wanted`` (every prompt the user has placed now); returns ``(number of
        prompts added, whether the state was rebuilt)``. Added prompts only extend the state; a prompt
        taken back or moved rebuilds it with ``wanted``."""
        remaining = Counter(wanted)
        rebuild = self.state is None
        for p in self.applied:
            if remaining[p] <= 0:
                rebuild = True
                break
            remaining[p] -= 1
        if rebuild:
            self._rebuild(list(wanted))
            self._pending = list(wanted)
            return len(wanted), True
        new = []
        for p in wanted:
            if remaining[p] > 0:
                new.append(p)
                remaining[p] -= 1
        self.add(new)
        return len(new), False

    # ------------------------------------------------------------------ propagate / write / undo
    def propagate(
        self,
        *,
        across_slices: bool = True,
        current: np.ndarray | None = None,
        progress: Callable[[int, object], None] | None = None,
    ):
        """:func:`semisam.propagation.propagate` on the state (``across_slices=False``: the prompted
        slices only, a slice with points only anchored on ``current``'s slice)."""
        from semisam.propagation import propagate

        return propagate(self.ensure_state(), progress=progress, across_slices=across_slices, current=current)

    def write(
        self,
        current: np.ndarray,
        result,
        rule: MergeRule | str = MergeRule.KEEP_AGREEING,
        *,
        across_slices: bool = True,
        target: str = "",
    ) -> Written:
        """Write ``result`` (this session's propagation) into ``current`` (the target's ``(Z, Y, X)``
        mask now) inside the propagated range, by ``rule`` (``KEY_SLICES`` when not ``across_slices``);
        records the range for the target's next write and the step for :meth:`undo`."""
        previous = self.written.get(target)
        lo, hi = propagated_range(result.slices, result.key_slices, previous)
        rule = MergeRule(rule) if across_slices else MergeRule.KEY_SLICES
        outcome = write_propagation(current, result.mask, self.axis, lo, hi, result.key_slices, rule)
        if across_slices:  # the prompted slices alone are no propagated range (later writes must not widen)
            self.written[target] = (lo, hi)
        self._history.append(_Step(self._pending, target, previous, across_slices))
        self._pending = []
        return Written(outcome, (lo, hi))

    def undo(self) -> list[Prompt]:
        """Take the last written propagation back: its prompts leave the state (rebuilt without them;
        embeddings stay cached) and its target's range is what it was before. Returns those prompts.
        The caller restores the mask it had before :meth:`write` (the session does not keep masks)."""
        if not self._history:
            return []
        step = self._history.pop()
        if step.across:
            if step.previous is None:
                self.written.pop(step.target, None)
            else:
                self.written[step.target] = step.previous
        taken = Counter(step.added)
        keep = []
        for p in self.applied:
            if taken[p] > 0:
                taken[p] -= 1
            else:
                keep.append(p)
        self._rebuild(keep)
        self._pending = []
        return list(step.added)

    @property
    def n_encoded(self) -> int:
        """Slices this session's state has encoded (cache misses)."""
        return 0 if self.state is None else int(self.state.n_encode)
