"""Scan I/O: reading, checking and writing scans and masks, and the intensity windows of scans.

* :mod:`~semisam.scan.volume`: the :class:`~semisam.scan.volume.Volume` type (voxels ``(Z, Y, X)`` and
  RAS geometry) and the atomic readers and writers; it re-exports the errors and limits below;
* :mod:`~semisam.scan.errors`: the errors (each names the file);
* :mod:`~semisam.scan.checks`: geometry limits checked before anything allocates or indexes voxels;
* :mod:`~semisam.scan.files`: reading files through SimpleITK without trusting them;
* :mod:`~semisam.scan.headers`: NRRD / MetaImage header checks before ITK parses them;
* :mod:`~semisam.scan.intensity`: CT windows and MRI percentiles for the generalists.

Nothing is imported here, so that ``semisam.scan.errors`` or ``semisam.scan.intensity`` costs no
SimpleITK import. Scripts may keep importing :mod:`semisam.volume`, the stable public entry point.
"""
