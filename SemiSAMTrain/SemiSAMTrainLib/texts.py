"""The translation function of SemiSAMTrain's texts: Slicer's ``tr`` in the application, the identity in slicer-core."""

try:  # the Slicer application
    from slicer.i18n import tr as _
except ImportError:  # the slicer-core wheel
    from SemiSAMLib.headless import tr as _

__all__ = ["_"]
