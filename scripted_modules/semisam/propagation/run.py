"""One call from a validated :class:`~semisam.prompts.PromptSet` to a :class:`PropagationResult`."""

from __future__ import annotations

from semisam.generalists.base import PromptableModel
from semisam.prompts import PromptSet
from semisam.propagation.engine import PropagationResult, propagate
from semisam.propagation.params import PropagationParams
from semisam.propagation.state import PropagationState, add_prompts, init_state
from semisam.scan.intensity import IntensityWindow
from semisam.scan.volume import Volume


def propagate_prompts(
    model: PromptableModel,
    volume: Volume,
    prompts: PromptSet,
    window: IntensityWindow | str | None = None,
    params: PropagationParams | None = None,
    modality: str | None = None,
) -> tuple[PropagationResult, PropagationState]:
    """Propagate ``prompts`` (already validated against ``volume``) and return the result and the state
    (keep the state to add corrections and re-propagate cheaply)."""
    state = init_state(model, volume, prompts.axis, window=window, params=params, modality=modality)
    add_prompts(state, list(prompts.prompts))
    return propagate(state), state
