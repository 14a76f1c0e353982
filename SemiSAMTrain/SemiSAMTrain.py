"""SemiSAMTrain: retrain the specialist on the labeled-set store in a background process; promote, roll back.

Module, parameter node, Widget, Logic and Test as in Slicer's scripted-module template. *Retrain* starts
``semisam train`` (docs/training.md) on the store as a child process with Slicer's own Python
(``SemiSAMLib.training_job``); a timer polls its JSON-lines events into the panel (progress bar, phase,
elapsed / remaining time) and into a live plot of the loss terms and validation Dice (table, plot-series
and plot-chart nodes of the scene: ``SemiSAMLib.training_plot``). *Cancel* stops the whole process tree and
leaves the registry as it was. The store's counts, its model versions with their validation metrics,
*Promote* and *Rollback* go through ``semisam.store``.

No ``from __future__ import annotations`` here: ``@parameterNodeWrapper`` reads the real annotation objects.
"""

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated

import slicer

if importlib.util.find_spec("SemiSAMLib") is None:  # development checkout: SemiSAMLib/ is at the root
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from SemiSAMTrainLib.job_logic import JobLogic
from SemiSAMTrainLib.store_logic import MODEL_COLUMNS, StoreLogic

from SemiSAMLib.defaults import (
    DEFAULTS,
    NEEDS_CHECKPOINT,
    RANGES,
    Device,
    Generalist,
    TrainingMethod,
)
from SemiSAMLib.gui import ModuleWidgetMixin, browse_checkpoint, browse_folder, poll_timer
from SemiSAMLib.slicer_api import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
    VTKObservationMixin,
    WithinRange,
    parameterNodeWrapper,
    qt,
)
from SemiSAMLib.slicer_api import tr as _
from SemiSAMLib.training_plot import TrainingProgress

log = logging.getLogger(__name__)

#: How often the Widget reads the job's events (ms), and how long Cancel waits for a clean stop (s).
POLL_MS = 500
CANCEL_GRACE_S = 30.0


#
# SemiSAMTrain
#
class SemiSAMTrain(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SemiSAM Train")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SemiSAM contributors"]
        self.parent.helpText = _(
            "Retrains the SemiSAM specialist on the labeled-set store (cases accepted in SemiSAM Segment) plus "
            "the unlabeled pool, semi-supervised with the generalist's help, in a background process; the new "
            "version is validated on a fixed held-out split and promoted only if better; rollback is one click."
        )
        self.parent.acknowledgementText = _(
            "Builds on SemiSAM+ (specialist-generalist co-learning), MedSAM-to-student distillation, "
            "mean teacher, MONAI and 3D Slicer."
        )


#
# SemiSAMTrainParameterNode
#
@parameterNodeWrapper
class SemiSAMTrainParameterNode:
    """State of the module (stored in the scene).

    storeFolder - folder of the labeled-set store shared with SemiSAM Segment and the training process.
    trainingMethod - supervised, mean teacher, SemiSAM+ (generalist pseudo-labels), SemiSAM+ with
        co-training, or distillation.
    iterations - optimiser steps of one retraining run; 0: follow the labeled set (500 per case, 1,000
        to 20,000).
    maxMinutes - wall-clock budget of a retraining run's loop in minutes (fewer iterations are planned
        when they would not fit); 0: none.
    device - where training runs: auto (CUDA when present), cpu or cuda.
    generalist - the generalist SemiSAM+ and distillation ask (LiteMedSAM ships with the extension).
    generalistCheckpoint - its checkpoint file, for generalists without bundled weights.
    promoteIfBetter - make the new version active when it beats the active one on the validation split.
    adaptGeneralist - after retraining, teach the generalist (LiteMedSAM) the structure in the same job;
        its version is promoted only when it answers better on the validation split.
    """

    storeFolder: str = DEFAULTS["storeFolder"]
    trainingMethod: TrainingMethod = DEFAULTS["trainingMethod"]
    iterations: Annotated[int, WithinRange(*RANGES["iterations"])] = DEFAULTS["iterations"]
    maxMinutes: Annotated[int, WithinRange(*RANGES["maxMinutes"])] = DEFAULTS["maxMinutes"]
    device: Device = DEFAULTS["device"]
    generalist: Generalist = DEFAULTS["generalist"]
    generalistCheckpoint: str = DEFAULTS["generalistCheckpoint"]
    promoteIfBetter: bool = DEFAULTS["promoteIfBetter"]
    adaptGeneralist: bool = DEFAULTS["adaptGeneralist"]


#
# SemiSAMTrainWidget
#
class SemiSAMTrainWidget(ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (UI only: every check calls the Logic). Set-up, enter/exit, scene close and
    preferences shared with SemiSAMSegment come from ``SemiSAMLib.gui.ModuleWidgetMixin``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = None
        self._timer = None  # polls the training job while it runs
        self._killAt = None  # after Cancel: when to stop waiting for a clean stop (seconds, monotonic)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSAMTrain.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._setupPanel(uiWidget, SemiSAMTrainLogic())
        self.ui.storeBrowseButton.connect("clicked(bool)", self.onBrowseStore)
        self.ui.checkpointBrowseButton.connect("clicked(bool)", self.onBrowseCheckpoint)
        self.ui.refreshButton.connect("clicked(bool)", self.refreshStore)
        self.ui.retrainButton.connect("clicked(bool)", self.onRetrain)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.promoteButton.connect("clicked(bool)", self.onPromote)
        self.ui.rollbackButton.connect("clicked(bool)", self.onRollback)
        self.ui.modelsTableWidget.connect("itemSelectionChanged()", self._updateModelButtons)
        self.ui.modelsTableWidget.setColumnCount(len(MODEL_COLUMNS))
        self.ui.modelsTableWidget.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self.ui.trainingProgressBar.setRange(0, 100)
        self.ui.trainingProgressBar.setValue(0)
        slicer.app.connect("aboutToQuit()", self.onApplicationQuit)  # disconnected in cleanup()
        self._storeShown = None  # the folder the table shows
        self._hasStore = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        """The widget is discarded (module reload, application exit): stop polling, drop observers, and
        stop asking at quit (else every widget a reload left behind would ask too)."""
        if self._timer is not None:
            self._timer.stop()
        slicer.app.disconnect("aboutToQuit()", self.onApplicationQuit)
        self.removeObservers()

    #: Parameter-node fields remembered across sessions in the application settings (SemiSAM/<field>).
    PREFERENCES = (
        "storeFolder", "trainingMethod", "iterations", "maxMinutes", "device", "generalist",
        "generalistCheckpoint", "promoteIfBetter", "adaptGeneralist",
    )  # fmt: skip

    def _askToStop(self, when: str) -> None:
        """Closing the scene or Slicer while training: ask whether to stop the run (cleanly: it saves a
        checkpoint) or to let it finish in the background (reopening the module re-attaches to it)."""
        if not self.logic.trainingRunning():
            return
        stop = slicer.util.confirmYesNoDisplay(
            _(
                "A retraining run is still running ({progress}).\n\n{when} Stop it now? It saves a "
                "checkpoint first; the registry stays as it is. Answer No to let it finish in the background "
                "(SemiSAM Train shows it again when you reopen the module)."
            ).format(progress=self.logic.progress.describe(), when=when)
        )
        if stop:
            with slicer.util.tryWithErrorDisplay(_("Stopping the training run failed."), waitCursor=True):
                self.logic.stopTraining(CANCEL_GRACE_S)

    def onSceneStartClose(self, caller, event) -> None:
        self._askToStop(_("The scene is closing, which removes the training plot."))
        self.setParameterNode(None)

    def onApplicationQuit(self) -> None:
        self._askToStop(_("Slicer is quitting."))

    def initializeParameterNode(self) -> None:
        self._storeShown = None  # read the store again: a run may have added or promoted a version
        self.setParameterNode(self.logic.getParameterNode())
        self._applyPreferences()
        plot = self.logic.plot
        if self.logic.trainingRunning() and (plot is None or plot.chart.GetScene() is None):
            self.logic.showIn(slicer.mrmlScene)  # a new scene: draw the running job's curves again
        self._reattach()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._observeParameterNode(inputParameterNode):
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._updateState()

    def _updateState(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.statusLabel.text = (
            (self.logic.storeProblem(p.storeFolder) or _("Store folder OK.")) if p else ""
        )
        if p and p.storeFolder != self._storeShown:
            self.refreshStore()
        needsCheckpoint = bool(p) and p.generalist in NEEDS_CHECKPOINT
        self.ui.generalistCheckpointLineEdit.enabled = needsCheckpoint
        self.ui.checkpointBrowseButton.enabled = needsCheckpoint
        self._updateTrainingButtons()

    def _updateTrainingButtons(self) -> None:
        running = self.logic.trainingRunning()
        self.ui.retrainButton.enabled = self._hasStore and not running
        self.ui.retrainButton.toolTip = (
            _("Retrain the specialist on this store in a background process (progress and plot below).")
            if self._hasStore
            else _("Choose a folder that holds a store first (Accept in SemiSAM Segment makes one).")
        )
        self.ui.cancelButton.enabled = running
        self.ui.cancelButton.toolTip = _(
            "Stop the training run (and all its processes); the registry stays as it was."
        )
        self.ui.showPlotButton.enabled = self.logic.plot is not None

    # ------------------------------------------------------------------ training
    def onRetrain(self) -> None:
        p = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("Retrain failed to start."), waitCursor=True):
                self.logic.startTraining(p.storeFolder, self.logic.settingsFrom(p), slicer.mrmlScene)
                self.ui.statusLabel.text = _("Retraining started.")
                self.onShowPlot()
                self._watch()
        finally:  # tryWithErrorDisplay raises again after its dialog: the buttons come back either way
            self._updateTrainingButtons()

    def _reattach(self) -> None:
        """Show a run started earlier (by this Slicer, e.g. from SemiSAM Segment's automatic retraining, or
        by one before it) that still runs on the store."""
        p = self._parameterNode
        if not p or not p.storeFolder or (self._timer is not None and self._timer.isActive()):
            return
        if self.logic.attachTraining(p.storeFolder, slicer.mrmlScene) is not None:
            self.ui.statusLabel.text = _("Showing the training run started earlier.")
            self._watch()

    def _watch(self) -> None:
        if self._timer is None or not self._timer.isActive():
            self._killAt = None
            self._timer = poll_timer(POLL_MS, self._onPoll)

    def _onPoll(self) -> bool:
        """Timer tick: read new events, show progress; returns False (stop polling) once the run ended.
        A tick that fails (an unreadable events file, a plot node deleted by hand) says so in the status
        line and restores the buttons; polling then stops (the timer would fail the same way every tick)."""
        import time

        try:
            plot = self.logic.plot
            if plot is not None and plot.chart.GetScene() is None:  # the scene was closed under the run
                self.logic.showIn(slicer.mrmlScene)
            self.logic.poll()
            progress = self.logic.progress
            self.ui.trainingProgressBar.setValue(int(round(100 * progress.fraction)))
            self.ui.trainingStatusLabel.text = progress.describe()
            if self._killAt is not None and time.monotonic() > self._killAt and self.logic.trainingRunning():
                self.logic.killTraining()  # did not stop cleanly in time: end the whole process tree
            if not self.logic.trainingFinished():
                return True
            self._onFinished(progress)
            return False
        except Exception as exc:
            logging.exception("reading the training run's progress failed")
            self.ui.trainingStatusLabel.text = _(
                "Cannot follow the training run ({error}); reopen the module to find it again."
            ).format(error=exc)
            self._updateState()
            return False

    def _onFinished(self, progress: TrainingProgress) -> None:
        if progress.outcome == "done":
            text = _("Retraining done: {version} ({promoted}). {why}").format(
                version=progress.version,
                promoted=_("now the active model") if progress.promoted else _("not promoted"),
                why=progress.message,
            )
            if progress.generalist_text():
                text += " " + progress.generalist_text()
        elif progress.outcome == "cancelled":
            text = _("Retraining cancelled; the registry is unchanged ({detail}).").format(
                detail=progress.message
            )
        else:
            text = _("Retraining failed: {message}").format(message=progress.message)
            slicer.util.errorDisplay(text, detailedText=self.logic.lastLogLines())
        self.ui.statusLabel.text = text
        self.refreshStore()  # a new version, perhaps a new active one
        self._updateTrainingButtons()

    def onCancel(self) -> None:
        import time

        self.logic.cancelTraining()
        self._killAt = time.monotonic() + CANCEL_GRACE_S
        self.ui.statusLabel.text = _("Stopping the training run (it saves a checkpoint first)...")
        self.ui.cancelButton.enabled = False

    def onShowPlot(self) -> None:
        if self.logic.plot is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self.logic.plot.chart)

    # ------------------------------------------------------------------ store and versions
    def refreshStore(self) -> None:
        """Show the store's counts and model versions (an empty table when the folder holds no store)."""
        p = self._parameterNode
        folder = p.storeFolder if p else ""
        self._storeShown = folder
        table = self.ui.modelsTableWidget
        table.setRowCount(0)
        try:
            summary = self.logic.storeSummary(folder)
            rows = self.logic.modelRows(folder)
        except (OSError, ValueError) as exc:  # store errors are ValueErrors and name the folder
            self._hasStore = False
            self.ui.storeSummaryLabel.text = str(exc) if folder else ""
            self._updateModelButtons()
            return
        self._hasStore = True
        self.ui.storeSummaryLabel.text = self.logic.describeSummary(summary)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, key in enumerate(MODEL_COLUMNS):
                table.setItem(r, c, qt.QTableWidgetItem(row[key]))
        table.resizeColumnsToContents()
        self._updateModelButtons()
        self._reattach()

    def _selectedVersion(self):
        items = self.ui.modelsTableWidget.selectedItems()
        return self.ui.modelsTableWidget.item(items[0].row(), 0).text() if items else None

    def _updateModelButtons(self) -> None:
        self.ui.promoteButton.enabled = self._hasStore and self._selectedVersion() is not None
        self.ui.rollbackButton.enabled = self._hasStore
        self.ui.refreshButton.enabled = bool(self._parameterNode and self._parameterNode.storeFolder)
        self._updateTrainingButtons()

    def onPromote(self) -> None:
        version = self._selectedVersion()
        requireBetter = self.ui.requireBetterCheckBox.checked
        try:
            with slicer.util.tryWithErrorDisplay(_("Promote failed."), waitCursor=True):
                v = self.logic.promote(self._parameterNode.storeFolder, version, requireBetter)
                self.ui.statusLabel.text = _("{version} is now the active model.").format(version=v.version)
        finally:  # the table shows the registry as it is now, also after a refused promotion
            self.refreshStore()

    def onRollback(self) -> None:
        try:
            with slicer.util.tryWithErrorDisplay(_("Rollback failed."), waitCursor=True):
                v = self.logic.rollback(self._parameterNode.storeFolder)
                self.ui.statusLabel.text = _("Rolled back: {version} is the active model again.").format(
                    version=v.version
                )
        finally:  # the table shows the registry as it is now, also after a refused rollback
            self.refreshStore()

    def onBrowseStore(self) -> None:
        p = self._parameterNode
        p.storeFolder = browse_folder(self.parent, _("Labeled-set store folder"), p.storeFolder)

    def onBrowseCheckpoint(self) -> None:
        p = self._parameterNode
        p.generalistCheckpoint = browse_checkpoint(
            self.parent, _("Generalist checkpoint"), p.generalistCheckpoint
        )


#
# SemiSAMTrainLogic
#
class SemiSAMTrainLogic(ScriptedLoadableModuleLogic, JobLogic, StoreLogic):
    """The store's cases and model versions, promote / rollback (:class:`SemiSAMTrainLib.store_logic.StoreLogic`),
    and the training job: a child process whose events :meth:`poll` folds into :attr:`progress` and
    :attr:`plot` (:class:`SemiSAMTrainLib.job_logic.JobLogic`). No qt, no ``slicer.app``: runs against
    slicer-core in pytest.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        JobLogic.__init__(self)

    def getParameterNode(self):
        return SemiSAMTrainParameterNode(super().getParameterNode())


#
# SemiSAMTrainTest
#
class SemiSAMTrainTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test). A test that needs torch or another
    Python package not installed yet is skipped (and said so); the others still run. None uses the
    network."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        from SemiSAMLib.selftest_runner import run_each

        run_each(
            (
                self.test_StoreProblem,
                self.test_ParameterNode,
                self.test_PromoteRollback,
                self.test_RetrainAndAutoSegment,
                self.test_RetrainTeachesTheGeneralist,
                self.test_CancelAndReattach,
            ),
            self.setUp,
            self.delayDisplay,
        )

    def test_StoreProblem(self) -> None:
        import tempfile

        logic = SemiSAMTrainLogic()
        self.assertIn("Choose", logic.storeProblem(""))
        with tempfile.TemporaryDirectory() as folder:
            self.assertIsNone(logic.storeProblem(folder))
            self.assertIsNone(logic.storeProblem(str(Path(folder) / "new" / "store")))
            blocker = Path(folder) / "file"
            blocker.write_text("x")
            self.assertIn("not a folder", logic.storeProblem(str(blocker)))

    def test_ParameterNode(self) -> None:
        node = SemiSAMTrainLogic().getParameterNode()
        self.assertEqual(node.trainingMethod, DEFAULTS["trainingMethod"])
        node.iterations = 7
        self.assertEqual(node.iterations, 7)
        self.assertEqual(SemiSAMTrainLogic.settingsFrom(node).iterations, 7)
        self.assertTrue(node.adaptGeneralist)  # on by default: every retrain also teaches the generalist
        node.adaptGeneralist = False
        self.assertFalse(SemiSAMTrainLogic.settingsFrom(node).adapt_generalist)
        self.delayDisplay("Test passed")

    def test_PromoteRollback(self) -> None:
        """Mirrors test_promote_and_rollback of Testing/Python/test_slicer_train_logic.py."""
        import tempfile

        from SemiSAMLib.selftest_runner import require_packages

        require_packages(self)  # torch builds the model versions
        import numpy as np
        import torch

        from semisam.model_folder import new_manifest, save_model
        from semisam.scan.volume import Volume
        from semisam.specialists import build_specialist
        from semisam.store import LabeledStore, RegistryError

        logic = SemiSAMTrainLogic()
        with tempfile.TemporaryDirectory() as tmp:
            store = LabeledStore.create(Path(tmp) / "store", {1: "lesion"}, modality="CT")
            image = Volume(np.zeros((4, 6, 5), np.float32), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
            store.add_case(image, np.ones(image.shape, np.uint8))
            for seed in (1, 2):
                manifest = new_manifest(
                    "mamba_unet", ["lesion"], "CT", kwargs={"channels": [8, 16, 16, 32, 32]}
                )
                torch.manual_seed(seed)
                folder = Path(tmp) / f"m{seed}"
                save_model(folder, build_specialist(manifest.arch, **manifest.kwargs), manifest)
                store.models.add(folder)
            folder = str(store.root)
            self.assertEqual(logic.storeSummary(folder)["labeled"], 1)
            self.assertEqual(logic.promote(folder, "v0001").version, "v0001")
            with self.assertRaises(RegistryError):
                logic.promote(folder, "v0002")  # no validation Dice to compare
            self.assertEqual(logic.promote(folder, "v0002", requireBetter=False).version, "v0002")
            self.assertEqual([r["active"] for r in logic.modelRows(folder)], ["", "yes"])
            self.assertEqual(logic.rollback(folder).version, "v0001")
        self.delayDisplay("Promote / rollback passed")

    def test_RetrainAndAutoSegment(self) -> None:
        """Mirrors test_a_real_run_reaches_done_... of Testing/Python/test_slicer_train_job.py."""
        import tempfile

        import SemiSAMSegment
        from SemiSAMLib import training_selftest
        from SemiSAMLib.selftest_runner import require_packages

        require_packages(self)  # the training process and the auto-segmentation run torch
        self.delayDisplay("Retrain a tiny synthetic store (a real semisam train process), then auto-segment")
        with tempfile.TemporaryDirectory() as tmp:
            version = training_selftest.retrain_flow(
                self,
                slicer.mrmlScene,
                SemiSAMTrainLogic(),
                SemiSAMSegment.SemiSAMSegmentLogic(),
                Path(tmp),
                slicer.app.processEvents,
            )
        self.delayDisplay(f"Retrain passed: {version}")

    def test_RetrainTeachesTheGeneralist(self) -> None:
        """Mirrors test_retrain_with_the_generalist_phase_... of Testing/Python/test_slicer_train_job.py."""
        import tempfile

        from SemiSAMLib import training_selftest
        from SemiSAMLib.selftest_runner import require_packages

        require_packages(self)
        self.delayDisplay("Retrain with the generalist phase (real LiteMedSAM, about a minute)")
        with tempfile.TemporaryDirectory() as tmp:
            training_selftest.adapt_flow(
                self, slicer.mrmlScene, SemiSAMTrainLogic(), Path(tmp), slicer.app.processEvents
            )
        self.delayDisplay("Generalist phase passed")

    def test_CancelAndReattach(self) -> None:
        """Mirrors test_cancel_ends_the_real_child_... of Testing/Python/test_slicer_train_job.py."""
        import tempfile

        from SemiSAMLib import training_selftest
        from SemiSAMLib.selftest_runner import require_packages

        require_packages(self)  # the training process runs torch
        self.delayDisplay("Cancel a running retraining, watched by a re-attached Logic")
        with tempfile.TemporaryDirectory() as tmp:
            training_selftest.cancel_flow(
                self,
                slicer.mrmlScene,
                SemiSAMTrainLogic,
                Path(tmp),
                slicer.app.processEvents,
                forget_live=False,
            )
        self.delayDisplay("Cancel passed")
