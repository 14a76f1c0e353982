"""A PNG montage of the prompted and propagated slices, with outlines, for people to look at."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from semisam.fileio import atomic_path
from semisam.prompts import Prompt
from semisam.slices import take_slice

MASK_RGB = (255, 60, 60)  # red: the propagated mask
LABEL_RGB = (60, 220, 60)  # green: the reference label
PROMPT_RGB = (255, 215, 0)  # yellow: the user's box / points, and the frame of a key slice


def _outline(m: np.ndarray) -> np.ndarray:
    return m & ~ndi.binary_erosion(m)


def render_montage(
    image01: np.ndarray,
    mask: np.ndarray,
    axis: str,
    slices: list[int],
    prompts: list[Prompt],
    label: np.ndarray | None = None,
    tile_px: int = 192,
    margin_px: int = 12,
) -> Image.Image:
    """One row of tiles, one per slice in ``slices``, cropped around the structure.

    Args:
        image01: ``(Z, Y, X)`` windowed intensities in [0, 1].
        mask: ``(Z, Y, X)`` propagated mask (outlined red).
        axis: slice axis.
        slices: slice indices to show, in order.
        prompts: the prompts (boxes drawn and key slices framed in yellow).
        label: optional ``(Z, Y, X)`` reference (outlined green).
        tile_px: size of each (square) tile.
        margin_px: context around the union of mask and label, in slice pixels.
    """
    # Long: drawing code (grid, overlays, captions): long but flat, with no branch worth a name.
    both = np.zeros(take_slice(mask, axis, slices[0]).shape, bool)
    for s in slices:
        both |= take_slice(mask, axis, s) > 0
        if label is not None:
            both |= take_slice(label, axis, s) > 0
    for p in prompts:
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            both[y0 : y1 + 1, x0 : x1 + 1] = True
    ys, xs = np.nonzero(both)
    h, w = both.shape
    if ys.size == 0:
        ys, xs = np.array([0, h - 1]), np.array([0, w - 1])
    half = max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) // 2 + margin_px
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    y0, y1 = max(0, cy - half), min(h, cy + half + 1)
    x0, x1 = max(0, cx - half), min(w, cx + half + 1)
    scale = tile_px / max(y1 - y0, x1 - x0)
    keyed = {p.slice for p in prompts}
    tiles = []
    for s in slices:
        g = (take_slice(image01, axis, s)[y0:y1, x0:x1] * 255).astype(np.uint8)
        rgb = np.repeat(g[..., None], 3, axis=2)
        up = max(1, int(round(scale)))
        rgb = np.kron(rgb, np.ones((up, up, 1), np.uint8))
        m = np.kron(take_slice(mask, axis, s)[y0:y1, x0:x1] > 0, np.ones((up, up), bool))
        if label is not None:
            lab = np.kron(take_slice(label, axis, s)[y0:y1, x0:x1] > 0, np.ones((up, up), bool))
            rgb[_outline(lab)] = LABEL_RGB
        rgb[_outline(m)] = MASK_RGB
        tile = Image.fromarray(rgb)
        draw = ImageDraw.Draw(tile)
        for p in prompts:
            if p.slice != s:
                continue
            if p.box is not None:
                bx0, by0, bx1, by1 = p.box
                draw.rectangle(
                    [(bx0 - x0) * up, (by0 - y0) * up, (bx1 - x0 + 1) * up - 1, (by1 - y0 + 1) * up - 1],
                    outline=PROMPT_RGB,
                )
            if p.point is not None:
                px, py = (p.point[0] - x0 + 0.5) * up, (p.point[1] - y0 + 0.5) * up
                fill = PROMPT_RGB if p.positive else (0, 160, 255)
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=fill)
        if s in keyed:
            draw.rectangle([0, 0, tile.width - 1, tile.height - 1], outline=PROMPT_RGB, width=3)
        draw.text((4, 2), f"{axis} {s}" + (" (prompt)" if s in keyed else ""), fill=(255, 255, 255))
        tiles.append(tile)
    legend_h = 16  # a strip naming the colours, so the PNG reads on its own
    width = sum(t.width for t in tiles) + 2 * (len(tiles) - 1)
    out = Image.new("RGB", (width, max(t.height for t in tiles) + legend_h))
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + 2
    draw = ImageDraw.Draw(out)
    y = out.height - legend_h + 2
    x = 4
    entries = [("propagated mask", MASK_RGB)] + ([("label", LABEL_RGB)] if label is not None else [])
    for text, colour in [*entries, ("prompt / key slice", PROMPT_RGB)]:
        draw.rectangle([x, y + 2, x + 9, y + 11], outline=colour, width=2)
        draw.text((x + 14, y), text, fill=colour)
        x += 14 + int(draw.textlength(text)) + 16
    return out


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write atomically (fsync'd temporary file + rename, :func:`semisam.fileio.atomic_path`)."""
    dest = Path(path)
    with atomic_path(dest, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return dest
