"""Sparse-slice propagation: prompts on a few key slices -> a 3D mask with per-slice confidence.

>>> state = init_state(model, volume, axis="axial")
>>> add_prompt(state, 33, box=(206, 347, 229, 368))
>>> result = propagate(state)          # result.mask (Z, Y, X) uint8, result.confidence (n_slices,)

See :mod:`semisam.propagation.state` for the session object, :mod:`.step` for one slice-to-slice step,
:mod:`.params` for the few thresholds and why they have their values.
"""

from __future__ import annotations

from semisam.propagation.engine import PropagationResult, propagate
from semisam.propagation.params import PropagationParams
from semisam.propagation.run import propagate_prompts
from semisam.propagation.state import PropagationState, add_prompt, add_prompts, init_state

__all__ = [
    "PropagationParams",
    "PropagationResult",
    "PropagationState",
    "add_prompt",
    "add_prompts",
    "init_state",
    "propagate",
    "propagate_prompts",
]
