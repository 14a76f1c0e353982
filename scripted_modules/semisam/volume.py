"""The stable public entry point for scans and masks: ``from semisam.volume import Volume, read_volume``.

The code lives in :mod:`semisam.scan` (:mod:`semisam.scan.volume` and the errors and limits it
re-exports); this module re-exports the same public names (``__all__``), the same objects, so that
scripts written against ``semisam.volume`` keep working. SemiSAM's own code imports
:mod:`semisam.scan.volume`.
"""

from semisam.scan.volume import *  # noqa: F403
from semisam.scan.volume import __all__  # noqa: F401
