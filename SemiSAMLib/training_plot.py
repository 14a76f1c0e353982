"""What SemiSAMTrain shows of a running job: its progress (from the events) and a live plot in the scene.

:class:`TrainingProgress` folds the job's events (docs/training.md) into the state the panel shows:
phase, iteration of iterations, elapsed and remaining seconds, the last losses and validation Dice, and
how the job ended. :class:`TrainingPlot` keeps the loss terms and the validation Dice in two
``vtkMRMLTableNode`` s (``iteration`` + one column per loss term; ``iteration`` + ``dice``) drawn by
``vtkMRMLPlotSeriesNode`` s in one ``vtkMRMLPlotChartNode``, so the curves are part of the scene (saved
with it, shown in any plot view). No qt, no ``slicer.app``: the nodes belong to the scene given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import vtk

#: Names of the nodes the plot makes (one set per scene, reused by the next run).
CHART_NAME = "SemiSAM training"
LOSS_TABLE_NAME = "SemiSAM training losses"
DICE_TABLE_NAME = "SemiSAM validation Dice"
#: Plot-series names: one per loss term (``"SemiSAM training: loss total"``) and the validation Dice (a loss
#: term may itself be called ``dice``).
VALIDATION_SERIES = f"{CHART_NAME}: validation Dice"


def _loss_series(term: str) -> str:
    return f"{CHART_NAME}: loss {term}"


#: What the phases of ``semisam train`` are called in the panel.
PHASE_TEXT = {
    "loading": "loading the store",
    "embeddings": "encoding the generalist's embeddings",
    "pseudo_labels": "computing pseudo-labels",
    "training": "training",
    "validating": "validating",
    "saving": "saving the new version",
    "generalist": "teaching the generalist",
}
#: Series colours (RGB 0..1), in the order loss terms first appear; validation Dice is black.
COLOURS = ((0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74))


@dataclass
class TrainingProgress:
    """The panel's view of one job, updated event by event (:meth:`apply`).

    Attributes:
        phase: the current phase (``semisam train`` names, e.g. ``"training"``), ``""`` before the first.
        phase_done, phase_total: work items inside the phase, when it reports them.
        iteration, iterations: optimiser steps done and asked for.
        elapsed_s: seconds since the job started (from the last event).
        eta_s: seconds remaining as the job estimates them (``None`` before the first iteration).
        losses: the last iteration's loss terms (``total`` included).
        dice: the last validation Dice (``None`` before the first validation).
        outcome: ``""`` while running, then ``"done"``, ``"cancelled"``, ``"error"`` or ``"crashed"``.
        message: the error message, or the promotion decision after ``done``.
        budget_note: what the time budget changed (fewer iterations planned), or "".
        version: the version the run registered (after ``done``).
        promoted: whether that version became the active model.
        generalist: the adaptation phase that follows a finished run (``generalist`` events), ``{}``
            without one: ``step`` / ``steps`` while it trains, then ``outcome`` (``done``, ``error``,
            ``cancelled``) with ``version``, ``promoted`` and ``message``.
    """

    phase: str = ""
    phase_done: int | None = None
    phase_total: int | None = None
    iteration: int = 0
    iterations: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    losses: dict[str, float] = field(default_factory=dict)
    dice: float | None = None
    outcome: str = ""
    message: str = ""
    budget_note: str = ""
    version: str | None = None
    promoted: bool = False
    generalist: dict = field(default_factory=dict)

    def apply(self, event: dict) -> None:
        """Fold one event into the progress (unknown kinds and fields are ignored)."""
        kind = event.get("event")
        self.elapsed_s = float(event.get("elapsed_s", self.elapsed_s) or 0.0)
        if kind == "start":
            self.iterations = int(event.get("iterations") or self.iterations)
            self.iteration = int(event.get("resumed_from") or 0)
        elif kind == "phase":
            self.phase = str(event.get("phase", ""))
            self.phase_done, self.phase_total = event.get("done"), event.get("total")
        elif kind == "iteration":
            self.phase = "training" if self.phase in ("", "validating") else self.phase
            self.iteration = int(event["iteration"])
            self.iterations = int(event.get("iterations") or self.iterations)
            self.eta_s = event.get("eta_s")
            self.losses = {k: float(v) for k, v in (event.get("losses") or {}).items()}
        elif kind == "budget":  # the time budget planned fewer iterations
            self.iterations = int(event.get("iterations") or self.iterations)
            self.budget_note = (
                f"{self.iterations} iterations fit the {event.get('max_minutes')} min budget "
                f"(of {event.get('planned')} planned)"
            )
        elif kind == "validation":
            self.dice = float(event["dice"])
        elif kind == "done":
            self.outcome = "done"
            self.version = event.get("version")
            self.promoted = bool(event.get("promoted"))
            self.message = str(event.get("promotion") or "")
            self.iteration = int(event.get("iterations") or self.iteration)
            dice = (event.get("validation") or {}).get("dice")
            self.dice = float(dice) if dice is not None else self.dice
            self.eta_s = 0.0
        elif kind == "cancelled":
            self.outcome = "cancelled"
            self.message = (
                f"stopped at iteration {event.get('iteration')}; resume from {event.get('checkpoint')}"
            )
        elif kind == "error":
            self.outcome = "error"
            self.message = f"{event.get('message', 'unknown error')} ({event.get('kind', 'internal')})"
        elif kind == "generalist":
            self._apply_generalist(event)

    def _apply_generalist(self, event: dict) -> None:
        """One event of the adaptation phase (``semisam train --adapt-generalist``)."""
        self.phase = "generalist"
        g = self.generalist
        what = event.get("kind")
        if what == "budget":
            g["steps"] = int(event.get("steps") or 0)
        elif what == "iteration":
            g["step"], g["steps"] = int(event.get("step") or 0), int(event.get("steps") or g.get("steps", 0))
        elif what == "done":
            g.update(outcome="done", version=event.get("version"), promoted=bool(event.get("promoted")))
            g["message"] = str(event.get("reason") or "")
        elif what in ("error", "cancelled"):
            g.update(outcome=what, message=str(event.get("message") or what))

    def generalist_text(self) -> str:
        """One sentence on the adaptation phase's outcome, or ``""`` when the job had none."""
        g = self.generalist
        if g.get("outcome") == "done":
            state = "now answers Propagate" if g.get("promoted") else "not promoted"
            return f"Generalist {g.get('version')} ({state}). {g.get('message', '')}".strip()
        if g.get("outcome") in ("error", "cancelled"):
            return f"The generalist was not adapted: {g.get('message', '')}"
        return ""

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (iterations done / asked for; during the adaptation phase, its steps)."""
        if self.phase == "generalist" and self.generalist.get("steps"):
            return min(1.0, self.generalist.get("step", 0) / self.generalist["steps"])
        return min(1.0, self.iteration / self.iterations) if self.iterations else 0.0

    def describe(self) -> str:
        """One line for the panel, e.g. ``"training: iteration 40/200, 1:05 elapsed, about 4:20 left;
        loss 0.412, validation Dice 0.713"``."""
        phase = PHASE_TEXT.get(self.phase, self.phase or "starting")
        if self.phase == "generalist":
            g = self.generalist
            done = f"retrained {self.version} ({'active' if self.promoted else 'not promoted'}); "
            if g.get("outcome"):
                return done + self.generalist_text()
            step = f": step {g.get('step', 0)}/{g.get('steps') or '?'}"
            return f"{done}{phase}{step}, {_clock(self.elapsed_s)} elapsed"
        if self.phase_total:
            phase += f" ({self.phase_done or 0}/{self.phase_total})"
        parts = [
            f"{phase}: iteration {self.iteration}/{self.iterations or '?'}",
            f"{_clock(self.elapsed_s)} elapsed",
        ]
        if self.eta_s is not None and not self.outcome:
            parts.append(f"about {_clock(float(self.eta_s))} left")
        text = ", ".join(parts)
        extra = []
        if "total" in self.losses:
            extra.append(f"loss {self.losses['total']:.4g}")
        if self.dice is not None:
            extra.append(f"validation Dice {self.dice:.4f}")
        if self.budget_note:
            extra.append(self.budget_note)
        return text + ("; " + ", ".join(extra) if extra else "")


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainingPlot:
    """Loss terms and validation Dice of a job as table, series and chart nodes in ``scene``.

    The nodes are found by name and reused (emptied by :meth:`reset`), so one scene holds one training
    plot however many runs it watched.
    """

    def __init__(self, scene) -> None:
        self.scene = scene
        self.loss_table = self._node("vtkMRMLTableNode", LOSS_TABLE_NAME)
        self.dice_table = self._node("vtkMRMLTableNode", DICE_TABLE_NAME)
        self.chart = self._node("vtkMRMLPlotChartNode", CHART_NAME)
        self.chart.SetTitle(CHART_NAME)
        self.chart.SetXAxisTitle("iteration")
        self.chart.SetYAxisTitle("loss / Dice")
        self._terms: list[str] = []
        self._columns()

    def _node(self, cls: str, name: str):
        node = self.scene.GetFirstNode(name, cls, False, True)
        return node if node is not None else self.scene.AddNewNodeByClass(cls, name)

    def _columns(self) -> None:
        """Read back the loss terms of a table that already has rows (a re-attached job)."""
        table = self.loss_table.GetTable()
        self._terms = [table.GetColumnName(c) for c in range(1, table.GetNumberOfColumns())]
        if self.dice_table.GetTable().GetNumberOfColumns() == 0:
            self._set_table(self.dice_table, ["iteration", "dice"])
        if table.GetNumberOfColumns() == 0:
            self._set_table(self.loss_table, ["iteration"])

    @staticmethod
    def _set_table(node, names) -> None:
        table = vtk.vtkTable()
        for name in names:
            array = vtk.vtkDoubleArray()
            array.SetName(name)
            table.AddColumn(array)
        node.SetAndObserveTable(table)

    def reset(self) -> None:
        """Empty both tables and drop the series (a new run starts a new plot)."""
        self.chart.RemoveAllPlotSeriesNodeIDs()
        for name in [*(_loss_series(t) for t in self._terms), VALIDATION_SERIES]:
            series = self.scene.GetFirstNode(name, "vtkMRMLPlotSeriesNode", False, True)
            if series is not None:
                self.scene.RemoveNode(series)
        self._terms = []
        self._set_table(self.loss_table, ["iteration"])
        self._set_table(self.dice_table, ["iteration", "dice"])

    def _series(self, table_node, column: str, name: str, colour) -> None:
        series = self.scene.GetFirstNode(name, "vtkMRMLPlotSeriesNode", False, True)
        if series is None:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("iteration")
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(
            series.MarkerStyleCircle if name == VALIDATION_SERIES else series.MarkerStyleNone
        )
        series.SetColor(*colour)
        if not self.chart.HasPlotSeriesNodeID(series.GetID()):
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())

    def add(self, event: dict) -> None:
        """Add an ``iteration`` (its losses) or ``validation`` (its Dice) event as a row."""
        kind = event.get("event")
        if kind == "iteration":
            losses = event.get("losses") or {}
            new = [k for k in losses if k not in self._terms]
            table = self.loss_table.GetTable()
            for term in new:  # a term that appears later (e.g. after a warm-up) gets NaN before
                array = vtk.vtkDoubleArray()
                array.SetName(term)
                array.SetNumberOfTuples(table.GetNumberOfRows())
                array.Fill(float("nan"))
                table.AddColumn(array)
                self._terms.append(term)
                colour = COLOURS[(len(self._terms) - 1) % len(COLOURS)]
                self._series(self.loss_table, term, _loss_series(term), colour)
            row = [float(event["iteration"])] + [float(losses.get(t, float("nan"))) for t in self._terms]
            self._append(self.loss_table, row)
        elif kind == "validation":
            self._append(self.dice_table, [float(event["iteration"]), float(event["dice"])])
            self._series(self.dice_table, "dice", VALIDATION_SERIES, (0.0, 0.0, 0.0))

    @staticmethod
    def _append(node, values) -> None:
        table = node.GetTable()
        for c, value in enumerate(values):
            table.GetColumn(c).InsertNextValue(value)
        table.Modified()
        node.Modified()

    def rows(self, which: str = "losses") -> list[dict[str, float]]:
        """The rows of the loss (``"losses"``) or Dice (``"dice"``) table as dicts (for tests and checks)."""
        table = (self.loss_table if which == "losses" else self.dice_table).GetTable()
        names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
        return [
            {n: table.GetColumn(c).GetValue(r) for c, n in enumerate(names)}
            for r in range(table.GetNumberOfRows())
        ]
