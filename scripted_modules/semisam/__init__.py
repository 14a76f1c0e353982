"""SemiSAM core: scans, prompts, promptable generalists, the specialist, the store and training.

This package never imports slicer, qt or vtk: it runs the same headless (CLI, batch, cluster) as
under 3D Slicer, whose SemiSAMSegment and SemiSAMTrain modules call into it.
"""

__version__ = "0.1.0"
