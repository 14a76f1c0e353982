"""GUI helpers for the SemiSAM Widgets (Slicer application only: qt, ``slicer.app``, ``slicer.util``).

Used by the Widgets alone, never by a Logic. The module files import it at their top, so the imports of qt,
vtk and the application happen inside the functions: importing this file headless (static checks, pytest
collection, the Logic against slicer-core) costs nothing and needs no GUI.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def red_slice_node():
    """The Red slice view's slice node, or ``None`` (with a warning) when the layout has no Red view."""
    import slicer

    widget = slicer.app.layoutManager().sliceWidget("Red")
    if widget is None:
        log.warning("no Red slice view in this layout; cannot show the slice")
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
