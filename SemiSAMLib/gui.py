"""GUI helpers for the SemiSAM Widgets (Slicer application only: qt, ``slicer.app``, ``slicer.util``).

Used by the Widgets alone, never by a Logic. The module files import it at their top, so the imports of qt,
vtk and the application happen inside the functions: importing this file headless (static checks, pytest
collection, the Logic against slicer-core) costs nothing and needs no GUI.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def red_slice_node():
    """The Red slice view's slice node, or ``None`` (with a warning) when there is no Red view: not in
    this layout, or no views at all (``slicer.app.layoutManager()`` is ``None`` under
    ``--no-main-window``)."""
    import slicer

    layout = slicer.app.layoutManager()
    widget = layout.sliceWidget("Red") if layout is not None else None
    if widget is None:
        log.warning("no Red slice view in this application window; cannot show the slice")
        return None
    return widget.mrmlSliceNode()


def browse_folder(parent, title: str, current: str) -> str:
    """A folder chosen in a dialog, or ``current`` when the user cancels."""
    import qt

    return qt.QFileDialog.getExistingDirectory(parent, title) or current


def browse_checkpoint(parent, title: str, current: str) -> str:
    """A generalist checkpoint file chosen in a dialog, or ``current`` when the user cancels."""
    import qt

    return (
        qt.QFileDialog.getOpenFileName(
            parent, title, "", "Checkpoints (*.pth *.pt *.safetensors);;All files (*)"
        )
        or current
    )


def announce(template: str, title: str, text: str) -> None:
    """Log ``template`` (with ``{title}`` and ``{text}``) and show it in the application's status bar for
    15 s: how a computation that ended after its module was left says so (no status bar under
    ``--no-main-window``: then the log only)."""
    import slicer

    message = template.format(title=title, text=text)
    log.info("%s", message)
    slicer.util.showStatusMessage(message, 15000)


def choose_mask_file(parent, save: bool) -> str:
    """A label-map file to load (``save=False``) or to save to, chosen in a dialog; ``""`` on cancel."""
    import qt
    from slicer.i18n import tr as _

    if save:
        return qt.QFileDialog.getSaveFileName(
            parent, _("Save mask"), "", _("Label maps (*.nrrd *.nii.gz *.mha)")
        )
    return qt.QFileDialog.getOpenFileName(
        parent, _("Load mask"), "", _("Label maps (*.nrrd *.nii *.nii.gz *.mha);;All files (*)")
    )


class ModuleWidgetMixin:
    """What the SemiSAM Widgets share, from Slicer's scripted-module template: the panel set-up, the
    scene-close observers, the parameter node's observer and the remembered preferences.

    Listed first among the Widget's bases (before ``ScriptedLoadableModuleWidget`` and
    ``VTKObservationMixin``, whose ``addObserver`` it uses). The Widget provides ``PREFERENCES`` (fields
    remembered as ``SemiSAM/<field>``), ``initializeParameterNode``, ``onSceneStartClose`` and
    ``_updateState``, and binds the GUI (``connectGui``) itself after :meth:`_observeParameterNode`.
    """

    PREFERENCES: tuple[str, ...] = ()

    def _setupPanel(self, uiWidget, logic) -> None:
        """Add the loaded panel (``self.ui`` already set), attach the Logic and observe the scene closing."""
        import slicer

        self.layout.addWidget(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        store_preferences(self._parameterNode, self.PREFERENCES)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def _applyPreferences(self) -> None:
        apply_preferences(self._parameterNode, self.PREFERENCES)

    def _observeParameterNode(self, node) -> bool:
        """Unbind and stop observing the current parameter node, then observe ``node`` (its changes call
        ``_updateState``); True when there is a new node (the caller then binds the GUI to it)."""
        import vtk

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateState)
        self._parameterNode = node
        if node:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._updateState)
        return bool(node)


def apply_preferences(parameter_node, keys) -> None:
    """Fill the fields ``keys`` of a parameter node that still hold their built-in default from the
    user's stored preferences (``SemiSAM/<field>`` in the application settings)."""
    import qt

    from .defaults import preferences_to_apply

    current = {key: getattr(parameter_node, key) for key in keys}
    for key, value in preferences_to_apply(current, qt.QSettings().value).items():
        try:
            setattr(parameter_node, key, value)
        except ValueError as exc:  # a stored value this version no longer offers: keep the default
            log.warning("ignoring stored preference SemiSAM/%s=%r: %s", key, value, exc)


def store_preferences(parameter_node, keys) -> None:
    """Remember the fields ``keys`` of a parameter node in the application settings."""
    import qt

    from .defaults import preferences_to_store

    if parameter_node:
        settings = qt.QSettings()
        current = {key: getattr(parameter_node, key) for key in keys}
        for key, value in preferences_to_store(current).items():
            settings.setValue(key, value)


def dependency_status() -> tuple[str, bool]:
    """``(text, whether there is something to install)`` for the module's Python-packages line; a broken
    requirements file is shown there, not raised (the panel must still open)."""
    from slicer.i18n import tr as _

    from . import dependencies

    try:
        missing = dependencies.missing_requirements()
    except dependencies.RequirementsError as exc:
        log.error("%s", exc)
        return _("Cannot check the Python packages: {error}").format(error=exc), False
    if not dependencies.torch_available():
        missing.insert(0, "torch (from the PyTorch extension)")
    if not missing:
        return _("All Python packages are installed."), False
    return _("Missing Python packages: {names}").format(names=", ".join(missing)), True


def train_settings():
    """SemiSAM Train's remembered settings (method, iterations, device, generalist, promotion), for a
    retraining started from SemiSAM Segment."""
    import qt

    from .defaults import setting
    from .training_job import TrainSettings

    read = qt.QSettings().value
    return TrainSettings(
        method=setting(read, "trainingMethod").value,
        iterations=setting(read, "iterations"),
        max_minutes=setting(read, "maxMinutes"),
        device=setting(read, "device").value,
        generalist=setting(read, "generalist").value,
        generalist_checkpoint=setting(read, "generalistCheckpoint"),
        promote_if_better=setting(read, "promoteIfBetter"),
        adapt_generalist=setting(read, "adaptGeneralist"),
    )


def install_dependencies(missing_text: str) -> None:
    """Ask, then install torch through the PyTorch extension and ``Resources/requirements.txt``."""
    import slicer
    from slicer.i18n import tr as _

    from . import dependencies

    if not slicer.util.confirmOkCancelDisplay(
        _("SemiSAM needs Python packages that are not installed yet:\n{names}\n\nInstall them now?").format(
            names=missing_text
        )
    ):
        return
    with slicer.util.tryWithErrorDisplay(_("Installing Python packages failed."), waitCursor=True):
        if not dependencies.torch_available():
            # torch first: monai would otherwise pull a generic build from PyPI.
            import PyTorchUtils

            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                raise RuntimeError(_("PyTorch was not installed; the other packages need it first."))
        dependencies.install_missing()


def poll_timer(interval_ms: int, tick) -> object:
    """A started ``qt.QTimer`` that calls ``tick()`` every ``interval_ms`` until ``tick`` returns False
    (then the timer stops itself). The Widgets poll their worker threads and the training process with it,
    so that results reach the scene on the main thread while the GUI keeps redrawing."""
    import qt

    timer = qt.QTimer()
    timer.setInterval(int(interval_ms))

    def on_timeout() -> None:
        try:
            keep = tick()
        except Exception:  # a failing tick must not fire again every interval
            timer.stop()
            raise
        if not keep:
            timer.stop()

    timer.connect("timeout()", on_timeout)
    timer.start()
    return timer
