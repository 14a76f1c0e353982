"""Slicer's application-level Python API, or its headless stand-ins: one import for both module files.

Inside the Slicer application these are the real ``ScriptedLoadableModule`` classes,
``slicer.parameterNodeWrapper``, ``slicer.i18n.tr``, ``VTKObservationMixin`` and ``qt``. Under the
``slicer-core`` wheel (pytest, batch scripts: MRML without the application) they are
``SemiSAMLib.headless``'s stand-ins and ``qt`` is ``None``, so a module file still imports and its Logic
runs. ``IN_SLICER`` says which.
"""

try:  # the Slicer application
    import qt
    from slicer.i18n import tr
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin

    IN_SLICER = True
except ImportError:  # the slicer-core wheel: MRML only
    from .headless import (
        Choice,
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
        VTKObservationMixin,
        WithinRange,
        parameterNodeWrapper,
        tr,
    )

    qt = None
    IN_SLICER = False

__all__ = [
    "IN_SLICER",
    "Choice",
    "ScriptedLoadableModule",
    "ScriptedLoadableModuleLogic",
    "ScriptedLoadableModuleTest",
    "ScriptedLoadableModuleWidget",
    "VTKObservationMixin",
    "WithinRange",
    "parameterNodeWrapper",
    "qt",
    "tr",
]
