"""User-facing texts of SemiSAMSegment: the module's help and acknowledgement, and its engine buttons'
tooltips (translated inside Slicer, plain headless)."""

from __future__ import annotations

from SemiSAMLib.slicer_api import tr as _

#: The module's help text (Slicer shows it at the top of the panel).
HELP_TEXT = _(
    "Human-in-the-loop lesion segmentation of CT and MRI: a small trained specialist proposes a "
    "segmentation in one click; you correct it by prompting a few slices with a promptable SAM-family "
    "generalist whose masks propagate across slices; accepted cases grow the labeled set that "
    "SemiSAM Train retrains the specialist on. Masks computed by the headless <code>semisam</code> "
    "command can be loaded into the output segmentation on the input volume's grid.<br>"
    "Prompts: an ROI box around the structure on the slice you see it best (its thinnest axis in "
    "voxels is the slice axis) and/or points; a point is positive unless its description is "
    "<code>-</code> (the '+/- last point' button flips it). Propagate changes the segment only in "
    "the propagated slice range and, by default, keeps the slices its new answer agrees with."
)
ACKNOWLEDGEMENT = _(
    "Builds on SemiSAM+ (specialist-generalist co-learning), MedSAM / LiteMedSAM, Segment Anything "
    "and SAM 2, MONAI, and 3D Slicer's Segmentations infrastructure."
)

#: Tooltips of the engine buttons while they are enabled.
ENABLED_TIPS = {
    "autoSegmentButton": _(
        "Run the specialist (the store's active model, else the model folder) on the input volume; "
        "ranks slices by uncertainty."
    ),
    "nextUncertainButton": _(
        "Show the next slice to check: the slices the last axial Propagate answered first, least confident "
        "first (the generalist's predicted IoU), then the rest by the specialist's uncertainty."
    ),
    "propagateButton": _(
        "Segment the prompted slices with the generalist and propagate through the structure; replaces "
        "the segment only in the propagated slice range."
    ),
    "acceptButton": _("Add the volume and the segmentation to the store, with provenance."),
}

#: Why an engine button is disabled (shown as its tooltip while the condition holds).
WHY_DISABLED = {
    "inputs": _("Choose an input volume and an output segmentation first."),
    "packages": _("Install the missing Python packages first (Python packages section)."),
    "model": _("Choose a model folder, or a store folder with an active model version."),
    "prompts": _("Choose prompt points and/or a prompt box (place at least one)."),
    "store": _("Choose a store folder to accept the case into."),
    "review": _(
        "Auto-segment or Propagate (axial) first: the review order comes from the specialist's uncertainty "
        "and the generalist's confidence."
    ),
}


def disabled_reasons(p, packages: bool, has_review: bool) -> dict:
    """Engine button name -> the :data:`WHY_DISABLED` key that keeps it disabled, or ``None`` (enabled).

    Args:
        p: the parameter node (``inputVolume``, ``outputSegmentation``, ``modelFolder``, ``storeFolder``,
            ``promptPoints``, ``promptROI``).
        packages: whether torch is importable.
        has_review: whether the output segmentation holds a review order (from auto-segment).
    """
    inputs = bool(p.inputVolume and p.outputSegmentation)
    engines = "inputs" if not inputs else None if packages else "packages"
    why = {
        "autoSegmentButton": engines or (None if p.modelFolder or p.storeFolder else "model"),
        "propagateButton": engines or (None if p.promptPoints or p.promptROI else "prompts"),
        "acceptButton": ("inputs" if not inputs else None) or (None if p.storeFolder else "store"),
        "nextUncertainButton": None if has_review else "review",
    }
    return why
