"""Stand-ins for Slicer's application-only Python classes, used when a module file is imported headless.

Inside the Slicer application the module files import the real ``ScriptedLoadableModule`` classes,
``slicer.parameterNodeWrapper`` and ``slicer.i18n``. The ``slicer-core`` wheel (pytest, batch scripts) has
MRML but not those; the module files then take these stand-ins so that the file still imports and its
**Logic** (MRML <-> numpy, calls into ``semisam``) runs. Module, Widget and Test refuse to be created.
"""

from __future__ import annotations

from typing import Any

#: True when this module is in use (no Slicer application).
HEADLESS = True


def _tr(text: str) -> str:
    """``slicer.i18n.tr`` without translations."""
    return text


class _NeedsApplication:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"{type(self).__name__} needs the 3D Slicer application (qt, slicer.app); "
            "only the Logic classes run against the slicer-core wheel"
        )


class ScriptedLoadableModule(_NeedsApplication):
    """Stand-in: a module object exists only inside Slicer."""


class ScriptedLoadableModuleWidget(_NeedsApplication):
    """Stand-in: widgets exist only inside Slicer."""


class ScriptedLoadableModuleTest(_NeedsApplication):
    """Stand-in: the module's self-test runs inside Slicer (Developer mode > Reload and Test)."""


class ScriptedLoadableModuleLogic:
    """Stand-in base of the modules' Logic: no parameter node (that needs ``slicer.mrmlScene``)."""

    def __init__(self, parent: Any = None) -> None:
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        raise RuntimeError(f"{self.moduleName}: parameter nodes need the 3D Slicer application")


class VTKObservationMixin:
    """Stand-in for ``slicer.util.VTKObservationMixin`` (only widgets use it)."""


def parameterNodeWrapper(cls: type) -> type:
    """Stand-in decorator: leaves the class as declared (its annotations document the fields)."""
    return cls


class WithinRange:
    """Stand-in for ``slicer.parameterNodeWrapper.WithinRange``: keeps the bounds."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum


class Choice:
    """Stand-in for ``slicer.parameterNodeWrapper.Choice``: keeps the choices."""

    def __init__(self, choices) -> None:
        self.choices = list(choices)


tr = _tr
