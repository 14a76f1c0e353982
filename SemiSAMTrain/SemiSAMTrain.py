"""SemiSAMTrain: retrain the specialist on the labeled-set store in a background process; promote, roll back.

Module, parameter node, Widget, Logic and Test as in Slicer's scripted-module template. The training job
and the model registry are not in the core yet, so Retrain / Cancel / Promote / Rollback are disabled and
their tooltips say which issue brings them; what works now is choosing and checking the store folder and
the training settings (kept in the scene's parameter node).

No ``from __future__ import annotations`` here: ``@parameterNodeWrapper`` reads the real annotation objects.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import slicer
import vtk

try:
    import SemiSAMSegmentLib  # noqa: F401  (shared helpers; importing it also makes ``semisam`` importable)
except ImportError:  # development checkout: the helpers live in the sibling SemiSAMSegment folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "SemiSAMSegment"))
from SemiSAMSegmentLib.defaults import (
    DEFAULTS,
    Device,
    TrainingMethod,
)

try:  # the Slicer application
    import qt
    from slicer.i18n import tr as _
    from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin
except ImportError:  # the slicer-core wheel: MRML only; the Logic below still runs
    from SemiSAMSegmentLib.headless import (
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

_TRAINING_ISSUE = _("the semi-supervised training issue (after #4 and #5)")

#: Tooltips of the buttons whose engine arrives with a later issue (kept here so tests can check them).
NOT_YET = {
    "retrainButton": _("Not available yet: background retraining arrives with {issue}.").format(
        issue=_TRAINING_ISSUE
    ),
    "cancelButton": _("Not available yet: cancelling a training run arrives with {issue}.").format(
        issue=_TRAINING_ISSUE
    ),
    "promoteButton": _(
        "Not available yet: the model registry (promote a validated version) arrives with issue #5."
    ),
    "rollbackButton": _(
        "Not available yet: the model registry (roll back to a previous version) arrives with issue #5."
    ),
}


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
    trainingMethod - supervised, mean teacher, SemiSAM+ (generalist pseudo-labels) or distillation.
    device - where training runs: auto (CUDA when present), cpu or cuda.
    epochs - number of training epochs, 1 to 1000.
    """

    storeFolder: str = DEFAULTS["storeFolder"]
    trainingMethod: TrainingMethod = DEFAULTS["trainingMethod"]
    device: Device = DEFAULTS["device"]
    epochs: Annotated[int, WithinRange(1, 1000)] = DEFAULTS["epochs"]


#
# SemiSAMTrainWidget
#
class SemiSAMTrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (UI only: every check calls the Logic)."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSAMTrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemiSAMTrainLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        for name, tip in NOT_YET.items():
            button = getattr(self.ui, name)
            button.enabled = False
            button.toolTip = tip
        self.ui.storeBrowseButton.connect("clicked(bool)", self.onBrowseStore)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._storePreferences()
        self.setParameterNode(None)

    #: Parameter-node fields remembered across sessions in the application settings (SemiSAM/<field>).
    PREFERENCES = ("storeFolder", "trainingMethod", "device", "epochs")

    def _applyPreferences(self) -> None:
        from SemiSAMSegmentLib.gui import apply_preferences

        apply_preferences(self._parameterNode, self.PREFERENCES)

    def _storePreferences(self) -> None:
        from SemiSAMSegmentLib.gui import store_preferences

        store_preferences(self._parameterNode, self.PREFERENCES)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._applyPreferences()

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
        self.ui.statusLabel.text = (
            (self.logic.storeProblem(p.storeFolder) or _("Store folder OK.")) if p else ""
        )

    def onBrowseStore(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Labeled-set store folder"))
        if folder:
            self._parameterNode.storeFolder = folder


#
# SemiSAMTrainLogic
#
class SemiSAMTrainLogic(ScriptedLoadableModuleLogic):
    """Checks and (later) drives the training process. No qt, no ``slicer.app``."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SemiSAMTrainParameterNode(super().getParameterNode())

    @staticmethod
    def storeProblem(folder: str):
        """Why ``folder`` cannot hold the store (a message naming it), or ``None`` when it can.

        A folder that does not exist yet is fine when its nearest existing parent is writable.
        """
        if not folder:
            return _("Choose a store folder.")
        path = Path(folder).expanduser()
        if path.exists() and not path.is_dir():
            return _("Store folder {path}: exists and is not a folder.").format(path=path)
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not os.access(existing, os.W_OK):
            return _("Store folder {path}: {existing} is not writable.").format(path=path, existing=existing)
        return None


#
# SemiSAMTrainTest
#
class SemiSAMTrainTest(ScriptedLoadableModuleTest):
    """Self-test, run inside Slicer (Developer mode: Reload and Test)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_StoreProblem()
        self.test_ParameterNode()

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
        node.epochs = 7
        self.assertEqual(node.epochs, 7)
        self.delayDisplay("Test passed")
