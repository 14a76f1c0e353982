"""The labeled dataset a simulation replays: an MSD / nnU-Net raw folder, its cases in a seeded order.

The labels play the radiologist's truth. Only :class:`~semisam.loop.annotator.SimulatedAnnotator` reads
them; the product (specialist, store, trainer) gets images and the annotator's masks, never these files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semisam.scan.volume import Volume, read_mask, read_volume

# The store's importer is the one place that knows both layouts (MSD and nnU-Net v2); reuse its reader.
from semisam.store.decathlon import read_dataset


@dataclass(frozen=True)
class DatasetCase:
    """One labeled case of the dataset: its id and files."""

    case_id: str
    image: Path
    label: Path


@dataclass
class Dataset:
    """A labeled dataset folder.

    Attributes:
        root: the folder (holds ``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        name: the dataset's name.
        labels: label value -> name, background excluded.
        modality: ``"CT"`` or ``"MR"`` (from the channel name; anything not CT counts as MR).
        cases: the labeled cases, sorted by id.
    """

    root: Path
    name: str
    labels: dict[int, str]
    modality: str
    cases: list[DatasetCase]

    @classmethod
    def open(cls, root: str | os.PathLike) -> Dataset:
        """Read ``dataset.json`` and list the cases (every image and label file must exist)."""
        raw = read_dataset(root)
        src, meta, labels, channel, pairs = raw.root, raw.meta, raw.labels, raw.channel, raw.pairs
        if not pairs:
            raise ValueError(f"{src}: the dataset lists no labeled cases (imagesTr / labelsTr are empty)")
        modality = "CT" if str(channel or "").upper().startswith("CT") else "MR"
        fg = {int(k): v for k, v in labels.items() if int(k) != 0}
        if not fg:
            raise ValueError(f"{src / 'dataset.json'}: no foreground label is declared")
        cases = sorted((DatasetCase(c, i, lab) for c, i, lab in pairs), key=lambda c: c.case_id)
        return cls(src, str(meta.get("name") or src.name), fg, modality, cases)

    def order(self, seed: int) -> list[str]:
        """Case ids in the seeded order in which they arrive (the same for the same ``seed``)."""
        ids = [c.case_id for c in self.cases]
        return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]

    def case(self, case_id: str) -> DatasetCase:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(f"{self.root}: no case {case_id!r}")

    def read(self, case_id: str, label: int) -> tuple[Volume, np.ndarray]:
        """``(image, truth)``: the scan and the binary truth ``(Z, Y, X)`` uint8 of label value ``label``."""
        c = self.case(case_id)
        image = read_volume(c.image)
        truth = read_mask(c.label, reference=image).array
        return image, (truth == label).astype(np.uint8)
