"""SemiSAMSegment: one-click specialist proposal, prompt-and-propagate corrections, accept into the store.

Module, parameter node, Widget, Logic and Test as in Slicer's scripted-module template. Inside Slicer all
of them work; against the ``slicer-core`` wheel (pytest, batch) only the Logic does (see
``SemiSAMSegmentLib/headless.py``). Buttons whose engine is not in the core yet stay disabled and say in
their tooltip which issue brings them.

No ``from __future__ import annotations`` here: ``@parameterNodeWrapper`` reads the real annotation objects.
"""

import logging
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import slicer
import vtk

# Importing SemiSAMSegmentLib also makes ``semisam`` importable in a development checkout.
from SemiSAMSegmentLib import accept as accept_lib
from SemiSAMSegmentLib import autoseg, dependencies, markup_prompts, mrml_io
from SemiSAMSegmentLib import propagate as propagate_lib
from SemiSAMSegmentLib import session as session_lib
from SemiSAMSegmentLib.defaults import (
    DEFAULTS,
    INTENSITY_PRESETS,
    NEEDS_CHECKPOINT,
    Device,
    Generalist,
    preferences_to_apply,
    preferences_to_store,
)
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

try:  # the Slicer application
    import qt
    from slicer.i18n import tr as _
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin
except ImportError:  # the slicer-core wheel: MRML only; the Logic below still runs
    from SemiSAMSegmentLib.headless import (
        Choice,
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
        VTKObservationMixin,
        WithinRange,
        parameterNodeWrapper,
    )
    from SemiSAMSegmentLib.headless import tr as _

    qt = None

log = logging.getLogger(__name__)

#: Tooltips of the buttons whose engine arrives with a later issue (kept here so tests can check them).
NOT_YET = {
    "autoSegmentButton": _(
        "Not available yet: the specialist and one-click auto-segmentation arrive with issue #4."
    ),
    "propagateButton": _(
        "Not available yet: promptable generalists and slice propagation arrive with issue #3."
    ),
    "acceptButton": _(
        "Not available yet: the labeled-set store that accepted cases go into arrives with issue #5."
    ),
}


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
        self.parent.helpText = _(
            "Human-in-the-loop lesion segmentation of CT and MRI: a small trained specialist proposes a "
            "segmentation in one click; you correct it by prompting a few slices with a promptable SAM-family "
            "generalist whose masks propagate across slices; accepted cases grow the labeled set that "
            "SemiSAM Train retrains the specialist on. Masks computed by the headless <code>semisam</code> "
            "command can be loaded into the output segmentation on the input volume's grid."
        )
        self.parent.acknowledgementText = _(
            "Builds on SemiSAM+ (specialist-generalist co-learning), MedSAM / LiteMedSAM, Segment Anything "
            "and SAM 2, MONAI, and 3D Slicer's Segmentations infrastructure."
        )


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
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    generalist: Generalist = DEFAULTS["generalist"]
    generalistCheckpoint: str = DEFAULTS["generalistCheckpoint"]
    intensityPreset: Annotated[str, Choice(INTENSITY_PRESETS)] = DEFAULTS["intensityPreset"]
    segmentName: str = DEFAULTS["segmentName"]
    segmentOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    device: Device = DEFAULTS["device"]


#
# SemiSAMSegmentWidget
#
class SemiSAMSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (UI only: every action calls the Logic)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSAMSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemiSAMSegmentLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for name, tip in NOT_YET.items():
            button = getattr(self.ui, name)
            button.enabled = False
            button.toolTip = tip
        self.ui.loadMaskButton.connect("clicked(bool)", self.onLoadMask)
        self.ui.saveMaskButton.connect("clicked(bool)", self.onSaveMask)
        self.ui.checkpointBrowseButton.connect("clicked(bool)", self.onBrowseCheckpoint)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self._updateDependencies()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._storePreferences()
        self.setParameterNode(None)

    #: Parameter-node fields remembered across sessions in the application settings (SemiSAM/<field>).
    PREFERENCES = ("generalist", "generalistCheckpoint", "intensityPreset", "segmentName", "device")

    def _preferenceValues(self) -> dict:
        return {key: getattr(self._parameterNode, key) for key in self.PREFERENCES}

    def _applyPreferences(self) -> None:
        for key, value in preferences_to_apply(self._preferenceValues(), qt.QSettings().value).items():
            try:
                setattr(self._parameterNode, key, value)
            except ValueError as exc:  # a stored value this version no longer offers: keep the default
                log.warning("ignoring stored preference SemiSAM/%s=%r: %s", key, value, exc)

    def _storePreferences(self) -> None:
        if self._parameterNode:
            settings = qt.QSettings()
            for key, value in preferences_to_store(self._preferenceValues()).items():
                settings.setValue(key, value)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._applyPreferences()
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
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
        self.ui.statusLabel.text = problem or ""
        if p and p.outputSegmentation:
            self.logic.setSegmentOpacity(p.outputSegmentation, p.segmentOpacity)

    def _updateDependencies(self) -> None:
        """Show what is missing; the install button is enabled only then."""
        missing = dependencies.missing_requirements()
        if not dependencies.torch_available():
            missing.insert(0, "torch (from the PyTorch extension)")
        self.ui.installDependenciesButton.enabled = bool(missing)
        self.ui.dependenciesLabel.text = (
            _("Missing Python packages: {names}").format(names=", ".join(missing))
            if missing
            else _("All Python packages are installed.")
        )

    def onInstallDependencies(self) -> None:
        """Install torch through the PyTorch extension, then Resources/requirements.txt, after asking."""
        if not slicer.util.confirmOkCancelDisplay(
            _(
                "SemiSAM needs Python packages that are not installed yet:\n{names}\n\nInstall them now?"
            ).format(names=self.ui.dependenciesLabel.text)
        ):
            return
        with slicer.util.tryWithErrorDisplay(_("Installing Python packages failed."), waitCursor=True):
            if not dependencies.torch_available():
                # torch first: monai would otherwise pull a generic build from PyPI.
                import PyTorchUtils

                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                    raise RuntimeError(_("PyTorch was not installed; the other packages need it first."))
            slicer.util.pip_install(["-r", str(dependencies.requirements_file())])
        self._updateDependencies()

    def onBrowseCheckpoint(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent,
            _("Generalist checkpoint"),
            "",
            _("Checkpoints (*.pth *.pt *.safetensors);;All files (*)"),
        )
        if path:
            self._parameterNode.generalistCheckpoint = path

    def onLoadMask(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Load mask"), "", _("Label maps (*.nrrd *.nii *.nii.gz *.mha);;All files (*)")
        )
        if not path:
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Loading the mask failed."), waitCursor=True):
            self.logic.importMaskFile(path, p.inputVolume, p.outputSegmentation, p.segmentName)

    def onSaveMask(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            self.parent, _("Save mask"), "", _("Label maps (*.nrrd *.nii.gz *.mha)")
        )
        if not path:
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Saving the mask failed."), waitCursor=True):
            self.logic.exportMaskFile(p.outputSegmentation, p.inputVolume, path)


#
# SemiSAMSegmentLogic
#
class SemiSAMSegmentLogic(ScriptedLoadableModuleLogic):
    """MRML <-> ``semisam``. No qt, no ``slicer.app``: runs inside Slicer and against slicer-core.

    Every method takes the nodes it works on; the scene is the nodes' own. The Logic keeps, per input
    volume node, the case in progress (:class:`SemiSAMSegmentLib.session.SegmentSession`: start time,
    proposal, prompts, the core's propagation state) until :meth:`accept`; and, shared by all cases, the
    loaded models and the slice-embedding cache.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._sessions = {}  # volume node ID -> SegmentSession
        self._generalists = {}  # (name, checkpoint, device) -> PromptableModel
        self._specialists = {}  # (folder, sha256, device) -> (model, manifest)
        self._embeddings = None  # semisam.generalists.cache.EmbeddingCache, made at first use

    # ------------------------------------------------------------------ the case in progress
    def session(self, volumeNode):
        """The case in progress on ``volumeNode`` (a new one when none, or when its voxels changed)."""
        if volumeNode is None:
            raise ValueError("choose an input volume")
        current = self._sessions.get(volumeNode.GetID())
        if current is None or current.key != session_lib.volume_key(volumeNode):
            current = self._sessions[volumeNode.GetID()] = session_lib.SegmentSession.for_node(volumeNode)
        return current

    def endSession(self, volumeNode) -> None:
        """Forget the case in progress on ``volumeNode`` (done by :meth:`accept`)."""
        if volumeNode is not None:
            self._sessions.pop(volumeNode.GetID(), None)

    # ------------------------------------------------------------------ auto-segment
    @staticmethod
    def resolveModelFolder(storeFolder: str, modelFolder: str):
        """``(model folder, version label)``: the store's active version when there is one, else
        ``modelFolder``. Raises ``ModelChoiceError`` saying what to choose."""
        return autoseg.resolve_model_folder(storeFolder, modelFolder)

    def autoSegment(
        self, volumeNode, modelDir, segmentationNode, device="auto", progress=None, modelVersion=None
    ):
        """Run the specialist in ``modelDir`` on ``volumeNode``; one segment per label of the model.

        Segments are named after the manifest's labels and replaced in place when they exist. The
        per-slice uncertainty ranking goes into a table node and the segmentation node's
        ``SemiSAM.ReviewOrder`` attribute; the labels are kept as the case's proposal (for the proposal
        Dice at :meth:`accept`).

        Args:
            volumeNode: the scan (``vtkMRMLScalarVolumeNode``).
            modelDir: a specialist model folder (``manifest.json`` + ``weights.safetensors``).
            segmentationNode: receives the segments (put on the volume's grid).
            device: ``auto``, ``cpu``, ``cuda`` (or a ``Device``).
            progress: ``progress(fraction 0..1, stage)`` callback.
            modelVersion: how provenance names the model (default ``folder:<modelDir>``).

        Returns:
            :class:`SemiSAMSegmentLib.autoseg.AutoSegmentResult` (its ``review_order``: slices ``k``,
            most uncertain first).
        """
        from semisam.device import resolve_device

        dev = resolve_device(getattr(device, "value", device))
        case = self.session(volumeNode)
        result, manifest = autoseg.run_specialist(
            case.volume, Path(modelDir), dev, progress, self._specialists
        )
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        names = {int(value): name for name, value in manifest.labels.items()}
        ids = mrml_io.import_mask(result.labels, volumeNode, segmentationNode, names)
        table = autoseg.write_review_table(segmentationNode, result.review_order, result.slice_uncertainty)
        case.proposal = result.labels
        case.proposal_version = modelVersion or f"folder:{Path(modelDir).resolve()}"
        case.modality = manifest.modality
        case.review_order = [int(k) for k in result.review_order]
        return autoseg.AutoSegmentResult(
            segment_ids=ids,
            review_order=case.review_order,
            slice_uncertainty=result.slice_uncertainty,
            table_node=table,
            model_version=case.proposal_version,
            seconds={k: round(v, 3) for k, v in result.seconds.items()},
        )

    @staticmethod
    def reviewOrder(segmentationNode) -> list:
        """Slices ``k`` most uncertain first, as stored by :meth:`autoSegment` (empty when none)."""
        return autoseg.review_order(segmentationNode)

    @staticmethod
    def nextUncertainSlice(segmentationNode, current=None):
        """The slice after ``current`` in the review order (the first when ``current`` is not in it;
        wraps around), or ``None`` when there is no ranking."""
        order = autoseg.review_order(segmentationNode)
        if not order:
            return None
        if current not in order:
            return order[0]
        return order[(order.index(current) + 1) % len(order)]

    @staticmethod
    def sliceCentreRAS(volumeNode, k: int):
        """RAS (mm) of the centre of slice ``k`` of ``volumeNode``."""
        return autoseg.slice_centre_ras(volumeNode, k)

    # ------------------------------------------------------------------ propagate
    def generalistModel(self, generalist="litemedsam", checkpoint="", device="auto"):
        """The generalist, built once per (name, checkpoint, device)."""
        from semisam.device import resolve_device
        from semisam.generalists import build_generalist

        name = getattr(generalist, "value", generalist)
        dev = resolve_device(getattr(device, "value", device))
        key = (name, str(checkpoint or ""), str(dev))
        if key not in self._generalists:
            self._generalists[key] = build_generalist(name, checkpoint=checkpoint or None, device=dev)
        return self._generalists[key]

    def embeddingCache(self):
        if self._embeddings is None:
            from semisam.generalists.cache import EmbeddingCache

            self._embeddings = EmbeddingCache(max_bytes=propagate_lib.EMBEDDING_CACHE_BYTES)
        return self._embeddings

    @staticmethod
    def promptsFromMarkups(volumeNode, pointsNode=None, roiNode=None, axis=None):
        """Voxel prompts (``MarkupPrompts``) from markups; see ``SemiSAMSegmentLib/markup_prompts.py``
        for the +/- convention and the axis rule. Raises ``MarkupPromptError`` naming the markup."""
        return markup_prompts.markups_to_prompts(
            mrml_io.volume_from_node(volumeNode), pointsNode, roiNode, axis
        )

    def propagate(
        self,
        volumeNode,
        segmentationNode,
        segmentName="lesion",
        pointsNode=None,
        roiNode=None,
        generalist="litemedsam",
        checkpoint="",
        intensityPreset="auto",
        device="auto",
        axis=None,
        progress=None,
    ):
        """Prompt with markups, propagate with the generalist, replace ``segmentName`` in that range only.

        Args:
            volumeNode, segmentationNode: the scan and the output.
            segmentName: the segment to write (created when missing).
            pointsNode: ``vtkMRMLMarkupsFiducialNode`` (+/- points) or ``None``.
            roiNode: ``vtkMRMLMarkupsROINode`` (a box) or ``None``.
            generalist: registry name (``litemedsam``; ``sam``/``medsam``/``sam2``/``medsam2`` need
                ``checkpoint``).
            intensityPreset: ``auto``, a CT window name or ``percentile``.
            device: ``auto``, ``cpu`` or ``cuda``.
            axis: slice axis; ``None``: the ROI's thinnest axis, else axial.
            progress: ``progress(fraction, stage)``.

        Returns:
            :class:`SemiSAMSegmentLib.propagate.PropagateOutcome`.

        Raises:
            MarkupPromptError: no prompt, or a markup outside the volume (names node and point).
        """
        name = getattr(generalist, "value", generalist)
        problem = self.generalistProblem(Generalist(name), checkpoint)
        if problem:
            raise ValueError(problem)
        case = self.session(volumeNode)
        markups = markup_prompts.markups_to_prompts(case.volume, pointsNode, roiNode, axis)
        model = self.generalistModel(name, checkpoint, device)
        window = propagate_lib.window_argument(intensityPreset)
        key = (
            name,
            str(checkpoint or ""),
            window,
            markups.prompts.axis,
            str(getattr(device, "value", device)),
        )
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        return propagate_lib.run(
            case,
            markups,
            model,
            key,
            window,
            self.embeddingCache(),
            volumeNode,
            segmentationNode,
            segmentName,
            progress,
        )

    # ------------------------------------------------------------------ accept
    def accept(self, volumeNode, segmentationNode, storeDir, provenance=None, segmentIds=None) -> str:
        """Add the volume and its segments to the labeled-set store; returns the new case id.

        ``provenance`` (a ``semisam.store.Provenance`` or a dict of its fields, e.g. ``{"annotator":
        "JD"}``) is completed from the case in progress: start/end time, prompts by kind, the model
        version that proposed the mask and the proposal's Dice against the accepted mask. The store is
        created when ``storeDir`` holds none (labels = the segment names). The case in progress ends.
        """
        case = self._sessions.get(volumeNode.GetID()) if volumeNode is not None else None
        if case is not None and case.key != session_lib.volume_key(volumeNode):
            case = None  # the voxels changed since: nothing of that session applies
        record = accept_lib.accept_case(volumeNode, segmentationNode, storeDir, provenance, case, segmentIds)
        self.endSession(volumeNode)
        return record.case_id

    def getParameterNode(self):
        return SemiSAMSegmentParameterNode(super().getParameterNode())

    @staticmethod
    def generalistProblem(generalist: Generalist, checkpoint: str):
        """Why ``generalist`` cannot be used with ``checkpoint`` (a message for the user), or ``None``.

        (Module files carry no ``X | None`` annotations: they must import on every Python Slicer ships.)
        """
        if generalist not in NEEDS_CHECKPOINT:
            return None
        if not checkpoint:
            return _("{name} needs a checkpoint file: choose one (nothing is downloaded).").format(
                name=generalist.value
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            return _("{name} checkpoint {path}: no such file.").format(name=generalist.value, path=path)
        if not os.access(path, os.R_OK):
            return _("{name} checkpoint {path}: not readable (permission denied).").format(
                name=generalist.value, path=path
            )
        return None

    @staticmethod
    def prepareOutputSegmentation(volumeNode, segmentationNode) -> None:
        """Put the segmentation on the volume's grid and give it display nodes."""
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()

    @staticmethod
    def setSegmentOpacity(segmentationNode, opacity: float) -> None:
        """2D fill opacity of all segments, clipped to [0, 1]."""
        display = segmentationNode.GetDisplayNode()
        if display is None and segmentationNode.GetScene() is not None:
            segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
        if display is not None:
            display.SetOpacity2DFill(float(np.clip(opacity, 0.0, 1.0)))

    def importMaskFile(self, path, volumeNode, segmentationNode, segmentName: str = "lesion") -> list[str]:
        """Load a label map written by ``semisam`` (or any NIfTI/NRRD/MHA on the scan's grid) into segments.

        Label 1 goes into ``segmentName``; further labels into ``"<segmentName> 2"`` and so on. The file
        must lie on the volume's voxel grid (axis order/direction may differ, as Slicer reverses the slice
        axis of left-handed files).

        Raises:
            semisam.volume.VolumeError: unreadable file, non-label values, or a different grid.
        """
        from semisam.volume import read_mask

        reference = mrml_io.volume_from_node(volumeNode)
        mask_volume = read_mask(path)
        mask = mrml_io.array_on_grid(mask_volume, reference)
        labels = [int(v) for v in np.unique(mask) if v > 0]
        names = {v: segmentName if v == 1 else f"{segmentName} {v}" for v in labels}
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        return mrml_io.import_mask(mask, volumeNode, segmentationNode, names)

    @staticmethod
    def exportMaskFile(segmentationNode, volumeNode, path, segmentIds=None) -> Path:
        """Write segments as a label map on the volume's grid (atomically, by ``semisam.volume.write_mask``).

        Label ``n`` is the ``n``-th of ``segmentIds`` (default: all segments in order).
        """
        from semisam.volume import write_mask

        mask = mrml_io.export_mask(segmentationNode, volumeNode, segmentIds)
        return write_mask(mask, mrml_io.volume_from_node(volumeNode), path)


#
# SemiSAMSegmentTest
#
class SemiSAMSegmentTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test). Uses the sample cases of
    ``semisam.samples`` when present on this machine and skips with a message otherwise."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_GeneralistProblem()
        self.test_MaskRoundTrip()

    def test_GeneralistProblem(self) -> None:
        logic = SemiSAMSegmentLogic()
        self.assertIsNone(logic.generalistProblem(Generalist.litemedsam, ""))
        self.assertIn("needs a checkpoint", logic.generalistProblem(Generalist.sam, ""))

    def test_MaskRoundTrip(self) -> None:
        import tempfile

        from semisam import samples
        from semisam.volume import read_mask

        case = samples.find_case("lung1")
        if case is None:
            self.skipTest("sample case lung1 not found locally; run `semisam samples fetch` to get it")
        self.delayDisplay("Loading lung1")
        volumeNode = slicer.util.loadVolume(str(case.image))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = SemiSAMSegmentLogic()
        ids = logic.importMaskFile(case.label, volumeNode, segmentationNode, "lesion")
        self.assertEqual(len(ids), 1)
        with tempfile.TemporaryDirectory() as folder:
            out = logic.exportMaskFile(segmentationNode, volumeNode, Path(folder) / "mask.nii.gz")
            self.assertTrue(np.array_equal(read_mask(out).array, read_mask(case.label).array))
        self.delayDisplay("Test passed")
