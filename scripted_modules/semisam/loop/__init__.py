"""The loop, measured: a simulated annotator replays SemiSAM on a labeled dataset and counts the effort.

>>> from semisam.loop import Simulation, SimulationConfig
>>> summary = Simulation(SimulationConfig(dataset="Dataset001", work="sim", retrain_every=4)).run()

Parts: :mod:`~semisam.loop.effort` (the time model), :mod:`~semisam.loop.annotator` (how the simulated
radiologist prompts and when it draws by hand), :mod:`~semisam.loop.replay` (propose, correct, accept,
retrain; resume), :mod:`~semisam.loop.summary`, :mod:`~semisam.loop.plot`, :mod:`~semisam.loop.dataset`
(the labeled dataset and its seeded order), :mod:`~semisam.loop.files` (the work folder's files). The CLI
is ``semisam simulate`` (:mod:`semisam.cli.simulate`); the tests write a tiny synthetic dataset with
``Testing/Python/loop_synth.py``.
"""

from semisam.loop.annotator import AnnotationResult, AnnotatorConfig, SimulatedAnnotator
from semisam.loop.effort import Effort, TimeModel
from semisam.loop.replay import Simulation, SimulationConfig

__all__ = [
    "AnnotationResult",
    "AnnotatorConfig",
    "Effort",
    "Simulation",
    "SimulationConfig",
    "SimulatedAnnotator",
    "TimeModel",
]
