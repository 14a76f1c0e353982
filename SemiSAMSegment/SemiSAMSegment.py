"""SemiSAMSegment: one-click specialist proposal, prompt-and-propagate corrections, accept into the store.

Module, parameter node, Widget, Logic and Test as in Slicer's scripted-module template. Inside Slicer all
of them work; against the ``slicer-core`` wheel (pytest, batch) only the Logic does (see
``SemiSAMLib/headless.py``). The Logic delegates to small helpers in ``SemiSAMSegmentLib/``:
``autoseg`` (specialist, review order), ``markup_prompts`` (markups -> voxel prompts, the +/- convention),
``propagate`` (the core's propagation into one segment, in range only), ``accept`` (store + provenance),
``session`` (the case in progress).

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
from SemiSAMSegmentLib.encoding import encoding_settings
from SemiSAMSegmentLib.logic import CaseLogic
from SemiSAMSegmentLib.texts import ACKNOWLEDGEMENT, ENABLED_TIPS, HELP_TEXT, WHY_DISABLED, disabled_reasons
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)

from SemiSAMLib import dependencies
from SemiSAMLib.defaults import DEFAULTS, INTENSITY_PRESETS, NEEDS_CHECKPOINT, RANGES, Device, Generalist
from SemiSAMLib.gui import (
    ModuleWidgetMixin,
    announce,
    browse_checkpoint,
    browse_folder,
    choose_mask_file,
    poll_timer,
    red_slice_node,
)
from SemiSAMLib.slicer_api import (
    Choice,
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

log = logging.getLogger(__name__)

#: How often the Widget looks at a running computation (ms): the progress bar moves and Cancel is seen.
WORKER_POLL_MS = 100
#: Background slice encoding: slices on each side of the viewed slice when a scan is shown, and at most
#: this many slices after auto-segment (those of the proposal and its neighbours, nearest first).
PRECOMPUTE_RADIUS = 8
PRECOMPUTE_LIMIT = 64


#
# SemiSAMSegment
#
class SemiSAMSegment(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SemiSAM Segment")
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SemiSAM contributors"]
        self.parent.helpText = HELP_TEXT
        self.parent.acknowledgementText = ACKNOWLEDGEMENT


#
# SemiSAMSegmentParameterNode
#
@parameterNodeWrapper
class SemiSAMSegmentParameterNode:
    """State of the module (stored in the scene).

    inputVolume - the scan to segment.
    outputSegmentation - receives proposals and corrections (one segment per structure).
    generalist - the promptable model that answers prompts (LiteMedSAM ships with the extension).
    generalistCheckpoint - checkpoint file for generalists without bundled weights (sam, medsam, sam2, medsam2).
    intensityPreset - how voxel values are scaled for the generalist (CT window name, percentile, or auto).
    segmentName - name of the segment results go into.
    segmentOpacity - 2D fill opacity of the output segmentation, 0 (transparent) to 1.
    device - where models run: auto (CUDA when present), cpu or cuda.
    promptPoints - point list of +/- prompts (a point is negative when its description is "-").
    promptROI - ROI box prompt (its thinnest axis in voxels is the slice axis).
    modelFolder - specialist model folder, used when the store has no active model version.
    storeFolder - labeled-set store: source of the active model, destination of accepted cases.
    annotator - who accepts cases (provenance).
    retrainEvery - start a retraining run (SemiSAM Train's settings) every N accepted cases; 0: never.
    keepAgreeingSlices - Propagate keeps the segment's slices the new answer agrees with (off: replace the range).
    propagateAcrossSlices - Propagate carries the prompts across slices (off: the prompted slices only).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    generalist: Generalist = DEFAULTS["generalist"]
    generalistCheckpoint: str = DEFAULTS["generalistCheckpoint"]
    intensityPreset: Annotated[str, Choice(INTENSITY_PRESETS)] = DEFAULTS["intensityPreset"]
    segmentName: str = DEFAULTS["segmentName"]
    segmentOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    device: Device = DEFAULTS["device"]
    promptPoints: vtkMRMLMarkupsFiducialNode
    promptROI: vtkMRMLMarkupsROINode
    modelFolder: str = DEFAULTS["modelFolder"]
    storeFolder: str = DEFAULTS["storeFolder"]
    annotator: str = DEFAULTS["annotator"]
    retrainEvery: Annotated[int, WithinRange(*RANGES["retrainEvery"])] = DEFAULTS["retrainEvery"]
    keepAgreeingSlices: bool = DEFAULTS["keepAgreeingSlices"]
    propagateAcrossSlices: bool = DEFAULTS["propagateAcrossSlices"]


#
# SemiSAMSegmentWidget
#
class SemiSAMSegmentWidget(ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (UI only: every action calls the Logic). Set-up, enter/exit, scene close and
    preferences shared with SemiSAMTrain come from ``SemiSAMLib.gui.ModuleWidgetMixin``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSAMSegment.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._setupPanel(uiWidget, SemiSAMSegmentLogic())
        self.ui.loadMaskButton.connect("clicked(bool)", self.onLoadMask)
        self.ui.saveMaskButton.connect("clicked(bool)", self.onSaveMask)
        self.ui.checkpointBrowseButton.connect("clicked(bool)", self.onBrowseCheckpoint)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.modelFolderBrowseButton.connect("clicked(bool)", self.onBrowseModelFolder)
        self.ui.storeFolderBrowseButton.connect("clicked(bool)", self.onBrowseStoreFolder)
        self.ui.autoSegmentButton.connect("clicked(bool)", self.onAutoSegment)
        self.ui.nextUncertainButton.connect("clicked(bool)", self.onNextUncertainSlice)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.toggleSignButton.connect("clicked(bool)", self.onToggleSign)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputVolumeChanged)
        self.ui.pointsPlaceWidget.placeMultipleMarkups = (
            slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        )
        self._reviewSlice = None  # the slice "Next uncertain slice" last jumped to
        self._precompute = None  # background slice encoding (after a scan is shown or auto-segmented)
        self._worker = None  # the running Auto-segment / Propagate computation (SemiSAMLib.worker.Worker)
        self._workerTimer = None
        self._workerTitle, self._workerFinish = "", None
        self._showBusy(False)
        self._updateDependencies()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopBackground()
        self.removeObservers()

    def _stopBackground(self) -> None:
        """Cancel the background encoding and a running computation (their results are not written)."""
        if self._precompute is not None:
            self._precompute.cancel()
        if self._worker is not None:
            self._worker.cancel()
            self._worker.wait(5.0)  # at most one encoder call (about a second on a CPU)
            self._worker = None
        if self._workerTimer is not None:
            self._workerTimer.stop()

    #: Parameter-node fields remembered across sessions in the application settings (SemiSAM/<field>).
    PREFERENCES = (
        "generalist", "generalistCheckpoint", "intensityPreset", "segmentName", "device", "modelFolder",
        "storeFolder", "annotator", "retrainEvery",
    )  # fmt: skip

    def onSceneStartClose(self, caller, event) -> None:
        self._stopBackground()
        self._showBusy(False)
        self.logic.clearSessions()
        self.setParameterNode(None)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._applyPreferences()
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._observeParameterNode(inputParameterNode):
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._updateState()

    def _updateState(self, caller=None, event=None) -> None:
        p = self._parameterNode
        haveBoth = bool(p and p.inputVolume and p.outputSegmentation)
        self.ui.loadMaskButton.enabled = haveBoth
        self.ui.saveMaskButton.enabled = haveBoth
        needsCheckpoint = bool(p) and p.generalist in NEEDS_CHECKPOINT
        self.ui.generalistCheckpointLineEdit.enabled = needsCheckpoint
        self.ui.checkpointBrowseButton.enabled = needsCheckpoint
        problem = self.logic.generalistProblem(p.generalist, p.generalistCheckpoint) if p else None
        if problem:
            self.ui.statusLabel.text = problem
        if not p:
            return
        self.ui.pointsPlaceWidget.setCurrentNode(p.promptPoints)
        self.ui.roiPlaceWidget.setCurrentNode(p.promptROI)
        self.ui.pointsPlaceWidget.enabled = p.promptPoints is not None
        self.ui.toggleSignButton.enabled = p.promptPoints is not None
        self.ui.roiPlaceWidget.enabled = p.promptROI is not None
        # Only a propagation across slices has neighbouring slices to keep or replace.
        self.ui.keepAgreeingSlicesCheckBox.enabled = p.propagateAcrossSlices
        why = disabled_reasons(
            p, dependencies.torch_available(), bool(self.logic.reviewOrder(p.outputSegmentation))
        )
        busy = self._worker is not None
        for name, reason in why.items():
            button = getattr(self.ui, name)
            button.enabled = reason is None and not busy and not (name == "propagateButton" and problem)
            button.toolTip = WHY_DISABLED[reason] if reason else ENABLED_TIPS[name]
        if p.outputSegmentation:
            self.logic.setSegmentOpacity(p.outputSegmentation, p.segmentOpacity)

    # ------------------------------------------------------------------ computations off the GUI thread
    def _showBusy(self, busy: bool, title: str = "") -> None:
        """Show the panel's progress bar and Cancel button while a computation runs."""
        self.ui.progressBar.visible = busy
        self.ui.cancelButton.visible = busy
        self.ui.cancelButton.enabled = busy
        if busy:
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.setFormat(_("{title}: starting").format(title=title))

    def _startWork(self, title: str, start, finish) -> None:
        """``start()`` (main thread: reads the scene, returns a started ``Worker``; its errors are shown);
        then the worker runs while the GUI keeps redrawing, and ``finish(result)`` writes the result to
        the scene on the main thread. Only one computation at a time. The buttons are brought up to date
        whatever happens (``tryWithErrorDisplay`` shows an error and raises it again)."""
        if self._worker is not None:
            return
        watched = False
        try:
            with slicer.util.tryWithErrorDisplay(_("{title} failed.").format(title=title), waitCursor=True):
                self._worker = start()
                self._workerTitle, self._workerFinish = title, finish
                self._showBusy(True, title)
                self._workerTimer = poll_timer(WORKER_POLL_MS, self._onWorkerTick)
                watched = True
        finally:
            if not watched:  # nothing runs, or nothing would ever write its result: stop it
                if self._worker is not None:
                    self._worker.cancel()
                self._worker = None
                self._showBusy(False)
            self._updateState()

    def _onWorkerTick(self) -> bool:
        from SemiSAMLib.worker import WorkerState

        worker, title = self._worker, self._workerTitle
        if worker is None:
            return False
        status = worker.poll()
        self.ui.progressBar.setValue(int(round(100 * status.fraction)))
        self.ui.progressBar.setFormat(f"{title}: {status.stage} (%p%)")
        if not status.finished:
            return True
        self._worker = None
        try:
            self._showBusy(False)
            if status.state is WorkerState.done:
                with slicer.util.tryWithErrorDisplay(
                    _("{title} failed.").format(title=title), waitCursor=True
                ):
                    self._workerFinish(worker.result)
            elif status.state is WorkerState.failed:
                with slicer.util.tryWithErrorDisplay(_("{title} failed.").format(title=title)):
                    raise worker.error
            else:
                self.ui.statusLabel.text = _("{title} cancelled; nothing was changed.").format(title=title)
        finally:  # the buttons come back whatever the result (the timer stops either way)
            self._updateState()
        return False

    def onCancel(self) -> None:
        """Stop the running computation at its next progress report (within about a second)."""
        if self._worker is not None:
            self._worker.cancel()
            self.ui.cancelButton.enabled = False
            self.ui.progressBar.setFormat(_("{title}: cancelling...").format(title=self._workerTitle))

    def onAutoSegment(self) -> None:
        p = self._parameterNode
        encoding = encoding_settings(p)  # as pressed: the module may be left before it ends

        def finish(request):
            out = self.logic.applyAutoSegment(request)
            self._reviewSlice = None
            self._showResult(_("Auto-segment"), out.describe())
            if self._parameterNode is not None:  # the panel is shown: go to the most uncertain slice
                self.onNextUncertainSlice()
            centres = out.review_order[:5]
            slices = self.logic.slicesAroundProposal(request.volume_node, centres, PRECOMPUTE_LIMIT)
            # The closer views a key slice is answered through, on the slices nearest the uncertain ones
            # (where the user is sent to prompt first); tracks answer on whole slices.
            views = self.logic.viewsAroundProposal(request.volume_node, slices[: PRECOMPUTE_LIMIT // 4])
            self._precomputeSlices(slices[: PRECOMPUTE_LIMIT - len(views)], encoding, views)

        self._startWork(
            _("Auto-segment"),
            lambda: self.logic.startAutoSegment(
                p.inputVolume, p.storeFolder, p.modelFolder, p.outputSegmentation, p.device
            ),
            finish,
        )

    def onInputVolumeChanged(self, node) -> None:
        """A scan is shown (the module opening included): encode the slices around the viewed one in the
        background. Only cheap reads happen here; torch, the generalist and the voxel copy are the job's
        (``SemiSAMSegmentLib/encoding.py``)."""
        if node is None or not dependencies.torch_available():
            return
        k = self.logic.sliceIndexAt(node, red_slice_node())
        settings = encoding_settings(self._parameterNode, node)
        if k is not None and settings is not None:
            self._precomputeSlices(self.logic.slicesAround(node, [k], PRECOMPUTE_RADIUS), settings)

    def _precomputeSlices(self, slices, settings, views=None) -> None:
        """Encode ``slices`` (nearest first), then the closer ``views`` of them, in the background with
        ``settings`` (``encoding_settings``); a best effort: a failure is logged and shown under the status
        line, and the next Propagate simply encodes what it needs."""
        if settings is None or not settings["volumeNode"] or not slices:
            return
        if self.logic.generalistProblem(settings["generalist"], settings["checkpoint"]):
            return  # the status line says what the generalist needs; Propagate refuses until then
        if self._precompute is not None:
            self._precompute.cancel()
        self._precompute = None
        try:
            self._precompute = self.logic.precomputeEmbeddings(slices=slices, views=views, **settings)
        except (ValueError, OSError) as exc:  # CheckpointError, VolumeError, MrmlIOError are ValueErrors
            self._showProblem(_("No background slice encoding: {error}").format(error=exc))
            return
        self._checkPrecompute()

    def _checkPrecompute(self) -> None:
        """Until the background encoding ends, look every second; then show why it failed, if it did."""
        job = self._precompute
        if job is not None and job.running():
            qt.QTimer.singleShot(1000, self._checkPrecompute)
        else:
            self._precomputeProblem()

    def _precomputeProblem(self) -> str:
        """Why the background encoding failed, logged and shown once (then the job is dropped), or ""."""
        problem = self.logic.precomputeProblem(self._precompute)
        if problem:
            self._precompute = None
            self._showProblem(problem)
        return problem or ""

    def _showResult(self, title: str, text: str) -> None:
        """Show a computation's result in the status line; when it ended after the module was left, also
        log it and show it in the application's status bar (the result is in the scene either way)."""
        self.ui.statusLabel.text = text
        if self._parameterNode is None:
            announce(_("SemiSAM {title} finished while the module was not shown: {text}"), title, text)

    def _showProblem(self, problem: str) -> None:
        """Log a warning and add it under the status line (which keeps the last result)."""
        log.warning("%s", problem)
        self.ui.statusLabel.text = "\n".join(filter(None, (self.ui.statusLabel.text, problem)))

    def onNextUncertainSlice(self) -> None:
        p = self._parameterNode
        if p is None:
            return
        k = self.logic.nextUncertainSlice(p.outputSegmentation, self._reviewSlice)
        if k is None:
            return
        self._reviewSlice = k
        sliceNode = red_slice_node()
        if sliceNode is not None:  # turned to the volume's slice plane: k is not S for sagittal scans
            self.logic.showSlice(sliceNode, p.inputVolume, k)
        self.ui.nextUncertainButton.text = _("Next uncertain slice (now: {k})").format(k=k)

    def onPropagate(self) -> None:
        p = self._parameterNode
        problem = self._precomputeProblem()

        def finish(request):
            out = self.logic.applyPropagate(request)
            self._reviewSlice = None  # the review order now starts with the slices just answered
            who = request.generalist_version and _("Answered by the store's adapted generalist {v}.").format(
                v=request.generalist_version
            )
            text = "\n".join(filter(None, (out.describe(request.segment_name), who, problem)))
            self._showResult(_("Propagate"), text)

        self._startWork(
            _("Propagate"),
            lambda: self.logic.startPropagate(
                p.inputVolume,
                p.outputSegmentation,
                p.segmentName,
                p.promptPoints,
                p.promptROI,
                p.generalist,
                p.generalistCheckpoint,
                p.intensityPreset,
                p.device,
                keepAgreeingSlices=p.keepAgreeingSlices,
                propagateAcrossSlices=p.propagateAcrossSlices,
                storeFolder=p.storeFolder,
            ),
            finish,
        )

    def onAccept(self) -> None:
        p = self._parameterNode
        provenance = {"annotator": p.annotator or None}
        with slicer.util.tryWithErrorDisplay(_("Accept failed."), waitCursor=True):
            # one store transaction, no steps to stop between: on the main thread, in well under a second
            caseId = self.logic.accept(p.inputVolume, p.outputSegmentation, p.storeFolder, provenance)
        self._retrainAfterAccept(caseId, p.storeFolder, p.retrainEvery)

    def _retrainAfterAccept(self, caseId: str, storeFolder: str, every: int) -> None:
        """After an accept: start retraining when due; the status says the case was accepted either way."""
        from SemiSAMLib.gui import train_settings

        text = _("Accepted as case {case} in {store}.").format(case=caseId, store=storeFolder)
        try:
            with slicer.util.tryWithErrorDisplay(_("Automatic retraining failed to start.")):
                if self.logic.startRetrainingIfDue(storeFolder, every, train_settings()) is not None:
                    text += " " + _(
                        "Retraining started in the background (every {n} accepted cases); SemiSAM Train "
                        "shows its progress."
                    ).format(n=every)
        finally:
            self.ui.statusLabel.text = text
            notice = self.logic.validationNotice(storeFolder)
            self.ui.statusLabel.text = f"{text}\n{notice}" if notice else text

    def onToggleSign(self) -> None:
        from SemiSAMSegmentLib.markup_prompts import toggle_point_sign

        sign = toggle_point_sign(self._parameterNode.promptPoints)
        if sign is not None:
            self.ui.statusLabel.text = _("Last point is now {sign}.").format(
                sign=_("positive") if sign == "+" else _("negative")
            )

    def onBrowseModelFolder(self) -> None:
        p = self._parameterNode
        p.modelFolder = browse_folder(self.parent, _("Specialist model folder"), p.modelFolder)

    def onBrowseStoreFolder(self) -> None:
        p = self._parameterNode
        p.storeFolder = browse_folder(self.parent, _("Labeled-set store folder"), p.storeFolder)

    def _updateDependencies(self) -> None:
        """Show what is missing; the install button is enabled only then."""
        from SemiSAMLib.gui import dependency_status

        self.ui.dependenciesLabel.text, self.ui.installDependenciesButton.enabled = dependency_status()

    def onInstallDependencies(self) -> None:
        """Install torch through the PyTorch extension, then Resources/requirements.txt, after asking."""
        from SemiSAMLib.gui import install_dependencies

        try:
            install_dependencies(self.ui.dependenciesLabel.text)
        finally:  # what is installed now, also after a failed or partial install
            self._updateDependencies()
            self._updateState()

    def onBrowseCheckpoint(self) -> None:
        p = self._parameterNode
        p.generalistCheckpoint = browse_checkpoint(
            self.parent, _("Generalist checkpoint"), p.generalistCheckpoint
        )

    def onLoadMask(self) -> None:
        path = choose_mask_file(self.parent, save=False)
        if not path:
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Loading the mask failed."), waitCursor=True):
            self.logic.importMaskFile(path, p.inputVolume, p.outputSegmentation, p.segmentName)

    def onSaveMask(self) -> None:
        path = choose_mask_file(self.parent, save=True)
        if not path:
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Saving the mask failed."), waitCursor=True):
            self.logic.exportMaskFile(p.outputSegmentation, p.inputVolume, path)


#
# SemiSAMSegmentLogic
#
class SemiSAMSegmentLogic(ScriptedLoadableModuleLogic, CaseLogic):
    """MRML <-> ``semisam``. No qt, no ``slicer.app``: runs inside Slicer and against slicer-core.

    Every method takes the nodes it works on; the scene is the nodes' own. Auto-segment, propagate and
    accept, with the case in progress they share, mask files, display settings and the generalist checks
    come from :class:`SemiSAMSegmentLib.logic.CaseLogic`.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        CaseLogic.__init__(self)

    def getParameterNode(self):
        return SemiSAMSegmentParameterNode(super().getParameterNode())


#
# SemiSAMSegmentTest
#
class SemiSAMSegmentTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test). Uses the sample cases of
    ``semisam.samples`` when present on this machine (never downloads them) and the Python packages once
    installed; a test without them is skipped (and said so) and the others still run. The flows are in
    ``SemiSAMSegmentLib/selftest.py`` and mirror ``Testing/Python/test_slicer_segment_flow.py``."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        from SemiSAMLib.selftest_runner import run_each

        run_each(
            (
                self.test_GeneralistProblem,
                self.test_MaskRoundTrip,
                self.test_AutoSegment,
                self.test_PropagateAndAccept,
                self.test_PropagateOffTheGuiThread,
            ),
            self.setUp,
            self.delayDisplay,
        )

    def test_GeneralistProblem(self) -> None:
        logic = SemiSAMSegmentLogic()
        self.assertIsNone(logic.generalistProblem(Generalist.litemedsam, ""))
        self.assertIn("needs a checkpoint", logic.generalistProblem(Generalist.sam, ""))

    def _runFlow(self, name: str, message: str, *extra, needsPackages: bool = True) -> None:
        """Run the flow ``name`` of ``SemiSAMSegmentLib.selftest`` on the scene, in a temporary folder
        (skipped before torch and the other packages are installed, unless ``needsPackages`` is False)."""
        import tempfile

        from SemiSAMSegmentLib import selftest

        from SemiSAMLib.selftest_runner import require_packages

        if needsPackages:
            require_packages(self)
        self.delayDisplay(message)
        with tempfile.TemporaryDirectory() as folder:
            getattr(selftest, name)(self, slicer.mrmlScene, SemiSAMSegmentLogic(), Path(folder), *extra)
        self.delayDisplay(_("{name} passed").format(name=name))

    def test_MaskRoundTrip(self) -> None:
        self._runFlow(
            "mask_round_trip_flow", "Mask round trip: load and save a label map", needsPackages=False
        )

    def test_AutoSegment(self) -> None:
        self._runFlow("auto_segment_flow", "Auto-segment (untrained specialist) on breast1")

    def test_PropagateAndAccept(self) -> None:
        self._runFlow(
            "propagate_and_accept_flow", "Propagate one ROI box with LiteMedSAM on a lung1 crop, then accept"
        )

    def test_PropagateOffTheGuiThread(self) -> None:
        self._runFlow(
            "worker_propagate_flow",
            "Propagate on a worker thread while the GUI keeps redrawing",
            slicer.app.processEvents,
        )
