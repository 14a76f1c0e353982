"""The training job seen from SemiSAMTrain's Logic: start, attach, poll, cancel a ``semisam train`` child.

:class:`JobLogic` is a base class of ``SemiSAMTrainLogic``. The child process is
``SemiSAMLib.training_job``'s; :meth:`JobLogic.poll` folds its JSON-lines events into :attr:`progress` and
the live plot (``SemiSAMLib.training_plot``). No qt, no ``slicer.app``: runs against slicer-core in pytest.
"""

from __future__ import annotations

from pathlib import Path

from SemiSAMLib import training_job
from SemiSAMLib.slicer_api import tr as _
from SemiSAMLib.training_plot import TrainingPlot, TrainingProgress


class JobLogic:
    """The watched training run.

    Attributes:
        job: the ``TrainingJob`` being watched (``None`` when none).
        progress: its ``TrainingProgress`` (phase, iterations, times, losses, Dice, outcome).
        plot: the ``TrainingPlot`` (table, series and chart nodes) in the scene given at start / attach.
        events: every event read from the job, in order (a new scene's plot is rebuilt from them).
    """

    def __init__(self) -> None:
        self.job = None
        self.progress = TrainingProgress()
        self.plot = None
        self.events = []
        self._ended = False

    @staticmethod
    def settingsFrom(p) -> training_job.TrainSettings:
        """The run's settings from the parameter node (or anything with its fields)."""
        return training_job.TrainSettings(
            method=getattr(p.trainingMethod, "value", p.trainingMethod),
            iterations=int(p.iterations),
            max_minutes=int(getattr(p, "maxMinutes", 10)),
            device=getattr(p.device, "value", p.device),
            generalist=getattr(p.generalist, "value", p.generalist),
            generalist_checkpoint=p.generalistCheckpoint,
            promote_if_better=bool(p.promoteIfBetter),
            adapt_generalist=bool(getattr(p, "adaptGeneralist", True)),
        )

    def startTraining(self, folder: str, settings, scene=None):
        """Start ``semisam train`` on the store in ``folder`` as a child process; returns the job.

        ``scene`` receives the live plot (a fresh one per run). Raises ``StoreNotFoundError`` when the
        folder holds no store and ``TrainingJobError`` when a run still runs on it.
        """
        store = self.openStore(folder)  # a clear error now rather than a failing child
        if self.trainingRunning():
            raise training_job.TrainingJobError(_("A training run is still running; cancel it first."))
        self.job = training_job.TrainingJob.start(store.root, settings)
        self._watchNew(scene)
        return self.job

    def attachTraining(self, folder: str, scene=None):
        """Watch the run recorded in the store's job-state file, if one is still running (or ended since
        without being watched); its events so far are read again. Returns the job or ``None``."""
        if not folder:
            return None
        root = str(Path(folder).expanduser().resolve())
        if self.job is not None and self.job.state.store == root and not self._ended:
            return self.job  # already watching it
        job = training_job.attach(folder)
        if job is None:
            return None
        self.job = job
        self.job._offset, self.job._partial = 0, b""  # replay: the plot shows the whole run
        self._watchNew(scene)
        self.poll()
        return self.job

    def _watchNew(self, scene) -> None:
        self.progress, self.events, self._ended = TrainingProgress(), [], False
        self.plot = TrainingPlot(scene) if scene is not None else None
        if self.plot is not None:
            self.plot.reset()

    def showIn(self, scene) -> None:
        """Draw the watched run into ``scene`` (e.g. a new scene after the previous one closed)."""
        self.plot = TrainingPlot(scene)
        self.plot.reset()
        for event in self.events:
            self.plot.add(event)

    def poll(self) -> list:
        """Read the job's new events, fold them into :attr:`progress` and :attr:`plot`; returns them.

        Once the process has ended, a run without a final event is reported as ``crashed`` with the last
        lines of its log, and the job-state file is removed.
        """
        if self.job is None:
            return []
        events = self.job.poll()
        for event in events:
            self.events.append(event)
            self.progress.apply(event)
            if self.plot is not None and self.plot.scene is not None:
                self.plot.add(event)
        if not self._ended and not self.job.running():
            events += self._collectEnd()
        return events

    def _collectEnd(self) -> list:
        late = self.job.poll()  # written between the read above and the exit
        for event in late:
            self.events.append(event)
            self.progress.apply(event)
            if self.plot is not None:
                self.plot.add(event)
        if not self.progress.outcome:
            self.progress.outcome = "crashed"
            self.progress.message = self.job.crash_message() or _("the training process ended")
        self.job.forget()
        self._ended = True
        return late

    def trainingRunning(self) -> bool:
        return self.job is not None and self.job.running()

    def trainingFinished(self) -> bool:
        """The watched run has ended, :meth:`poll` has read all it wrote and its outcome is known
        (``progress.outcome``)."""
        return self.job is not None and self._ended

    def cancelTraining(self) -> None:
        """Ask the run to stop cleanly (it checkpoints, writes ``cancelled`` and exits 3); non-blocking."""
        if self.job is not None:
            self.job.terminate()

    def killTraining(self) -> None:
        """End the run's whole process tree now."""
        if self.job is not None:
            self.job.kill()

    def stopTraining(self, grace_s: float = 30.0) -> bool:
        """Cancel and wait up to ``grace_s`` seconds, then kill; reads the last events. True when the run
        stopped cleanly (or had already ended)."""
        if self.job is None:
            return True
        clean = self.job.stop(grace_s)
        self.poll()
        return clean

    def lastLogLines(self, n: int = 20) -> str:
        """The last ``n`` lines of the run's log (stderr: warnings, tracebacks), for an error message; when
        the log is empty (a killed process writes none), the last lines of its events file."""
        if self.job is None:
            return ""
        lines = self.job.log_tail(n)
        if not lines:
            lines = [_("(the job's log is empty; its last events:)")] + self.job.events_tail(n)
        return training_job.last_lines(lines, n + 1)
