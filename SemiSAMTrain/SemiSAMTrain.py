"""SemiSAMTrain: retrain the specialist on the labeled-set store in a background process; promote, roll back.

Module, parameter node, Widget, Logic and Test as in Slicer's scripted-module template. What works: choosing
and checking the store folder, the store's case counts (labeled train / validation, unlabeled pool), its
model versions with their validation metrics, and Promote / Rollback through ``semisam.store.ModelRegistry``.
The training job is not in the core yet (its issue is not filed), so Retrain / Cancel stay disabled and
their tooltips say so; the training settings are kept in the scene's parameter node for it.

No ``from __future__ import annotations`` here: ``@parameterNodeWrapper`` reads the real annotation objects.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import slicer

try:
    import SemiSAMSegmentLib  # noqa: F401  (shared helpers; importing it also makes ``semisam`` importable)
except ImportError:  # development checkout: the helpers live in the sibling SemiSAMSegment folder
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "SemiSAMSegment"))
from SemiSAMSegmentLib.defaults import (
    DEFAULTS,
    Device,
    TrainingMethod,
)
from SemiSAMSegmentLib.gui import ModuleWidgetMixin, browse_folder

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
}

#: Columns of the model-versions table (keys of :meth:`SemiSAMTrainLogic.modelRows`).
MODEL_COLUMNS = ("version", "active", "arch", "dice", "metrics", "evaluated on", "added", "parent")


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
class SemiSAMTrainWidget(ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (UI only: every check calls the Logic). Set-up, enter/exit, scene close and
    preferences shared with SemiSAMSegment come from ``SemiSAMSegmentLib.gui.ModuleWidgetMixin``."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = self._parameterNode = self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSAMTrain.ui"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self._setupPanel(uiWidget, SemiSAMTrainLogic(), NOT_YET)
        self.ui.storeBrowseButton.connect("clicked(bool)", self.onBrowseStore)
        self.ui.refreshButton.connect("clicked(bool)", self.refreshStore)
        self.ui.promoteButton.connect("clicked(bool)", self.onPromote)
        self.ui.rollbackButton.connect("clicked(bool)", self.onRollback)
        self.ui.modelsTableWidget.connect("itemSelectionChanged()", self._updateModelButtons)
        self.ui.modelsTableWidget.setColumnCount(len(MODEL_COLUMNS))
        self.ui.modelsTableWidget.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self._storeShown = None  # the folder the table shows
        self._hasStore = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    #: Parameter-node fields remembered across sessions in the application settings (SemiSAM/<field>).
    PREFERENCES = ("storeFolder", "trainingMethod", "device", "epochs")

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._applyPreferences()

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

    def _selectedVersion(self):
        items = self.ui.modelsTableWidget.selectedItems()
        return self.ui.modelsTableWidget.item(items[0].row(), 0).text() if items else None

    def _updateModelButtons(self) -> None:
        self.ui.promoteButton.enabled = self._hasStore and self._selectedVersion() is not None
        self.ui.rollbackButton.enabled = self._hasStore
        self.ui.refreshButton.enabled = bool(self._parameterNode and self._parameterNode.storeFolder)

    def onPromote(self) -> None:
        version = self._selectedVersion()
        requireBetter = self.ui.requireBetterCheckBox.checked
        with slicer.util.tryWithErrorDisplay(_("Promote failed."), waitCursor=True):
            v = self.logic.promote(self._parameterNode.storeFolder, version, requireBetter)
            self.ui.statusLabel.text = _("{version} is now the active model.").format(version=v.version)
        self.refreshStore()

    def onRollback(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Rollback failed."), waitCursor=True):
            v = self.logic.rollback(self._parameterNode.storeFolder)
            self.ui.statusLabel.text = _("Rolled back: {version} is the active model again.").format(
                version=v.version
            )
        self.refreshStore()

    def onBrowseStore(self) -> None:
        p = self._parameterNode
        p.storeFolder = browse_folder(self.parent, _("Labeled-set store folder"), p.storeFolder)


#
# SemiSAMTrainLogic
#
class SemiSAMTrainLogic(ScriptedLoadableModuleLogic):
    """The store's cases and model versions, promote / rollback (``semisam.store``); later the training
    process. No qt, no ``slicer.app``: runs against slicer-core in pytest."""

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

    @staticmethod
    def openStore(folder: str):
        """The :class:`semisam.store.LabeledStore` in ``folder``.

        Raises:
            semisam.store.StoreNotFoundError: ``folder`` holds no store (the message names it and says
                how one is made: Accept in SemiSAM Segment, or ``semisam store init``).
        """
        from semisam.store import LabeledStore

        if not folder:
            raise ValueError(_("Choose a store folder."))
        return LabeledStore(Path(folder).expanduser())

    def storeSummary(self, folder: str) -> dict:
        """Counts of the store in ``folder``: ``{"name", "labels", "labeled", "train", "validation",
        "unlabeled", "versions", "active"}`` (``active``: the active version or ``None``)."""
        store = self.openStore(folder)
        cases = store.cases()
        active = store.models.active()
        return {
            "name": store.name,
            "labels": {k: v for k, v in store.labels.items() if k > 0},
            "labeled": len(cases),
            "train": sum(c.split == "train" for c in cases),
            "validation": sum(c.split == "validation" for c in cases),
            "unlabeled": len(store.unlabeled()),
            "versions": len(store.models.versions()),
            "active": active.version if active else None,
        }

    @staticmethod
    def describeSummary(summary: dict) -> str:
        """One line for the status label."""
        return _(
            "{labeled} labeled case(s) ({train} train, {validation} validation), {unlabeled} unlabeled; "
            "{versions} model version(s), active: {active}."
        ).format(**{**summary, "active": summary["active"] or _("none")})

    def modelRows(self, folder: str) -> list:
        """One dict per model version, oldest first, keyed by :data:`MODEL_COLUMNS` (strings for a table;
        ``dice`` is ``""`` when the version was not evaluated)."""
        store = self.openStore(folder)
        active = store.models.active()
        rows = []
        for v in store.models.versions():
            rows.append(
                {
                    "version": v.version,
                    "active": "yes" if active is not None and v.version == active.version else "",
                    "arch": v.arch or "",
                    "dice": f"{v.metrics['dice']:.4f}" if "dice" in v.metrics else "",
                    "metrics": ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())),
                    "evaluated on": _("{n} case(s)").format(n=len(v.evaluated_on)) if v.metrics else "",
                    "added": v.added,
                    "parent": v.parent or "",
                }
            )
        return rows

    def promote(self, folder: str, version: str, requireBetter: bool = True):
        """Make ``version`` the active model (SemiSAM Segment's auto-segment picks it up).

        With ``requireBetter`` it must have a higher validation Dice than the active version, measured on
        the same validation cases; otherwise ``semisam.store.RegistryError`` says why and nothing changes.
        """
        return self.openStore(folder).models.promote(version, require_better=requireBetter)

    def rollback(self, folder: str):
        """Make the previously active version active again; returns it (``RegistryError`` when none)."""
        return self.openStore(folder).models.rollback()


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
        self.test_PromoteRollback()

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

    def test_PromoteRollback(self) -> None:
        """Mirrors test_promote_and_rollback of Testing/Python/test_slicer_train_logic.py."""
        import tempfile

        import numpy as np
        import torch

        from semisam.checkpoints import new_manifest, save_model
        from semisam.specialists import build_specialist
        from semisam.store import LabeledStore, RegistryError
        from semisam.volume import Volume

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
