"""The labeled-set store seen from SemiSAMTrain's Logic: its counts, its model versions, promote / rollback.

:class:`StoreLogic` is a base class of ``SemiSAMTrainLogic``; everything goes through ``semisam.store``.
No qt, no ``slicer.app``.
"""

from __future__ import annotations

import os
from pathlib import Path

from SemiSAMLib.slicer_api import tr as _

#: Columns of the model-versions table (keys of :meth:`StoreLogic.modelRows`).
MODEL_COLUMNS = ("version", "active", "arch", "dice", "metrics", "evaluated on", "added", "parent")


class StoreLogic:
    """Store folder checks, counts, the versions table, promote and rollback (stateless)."""

    @staticmethod
    def storeProblem(folder: str):
        """Why ``folder`` cannot hold the store (a message naming it), or ``None`` when it can.

        A folder that does not exist yet is fine when its nearest existing parent is writable.
        """
        if not folder:
            return _("Choose a store folder.")
        path = Path(folder).expanduser()
        if path.exists() and not path.is_dir():
            return _("Store folder {path}: exists and is not a folder.").format(path=path)
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not os.access(existing, os.W_OK):
            return _("Store folder {path}: {existing} is not writable.").format(path=path, existing=existing)
        return None

    @staticmethod
    def openStore(folder: str):
        """The :class:`semisam.store.LabeledStore` in ``folder``.

        Raises:
            semisam.store.StoreNotFoundError: ``folder`` holds no store (the message names it and says
                how one is made: Accept in SemiSAM Segment, or ``semisam store init``).
        """
        from semisam.store import LabeledStore

        if not folder:
            raise ValueError(_("Choose a store folder."))
        return LabeledStore(Path(folder).expanduser())

    def storeSummary(self, folder: str) -> dict:
        """Counts of the store in ``folder``: ``{"name", "labels", "labeled", "train", "validation",
        "unlabeled", "versions", "active"}`` (``active``: the active version or ``None``)."""
        store = self.openStore(folder)
        cases = store.cases()
        active = store.models.active()
        return {
            "name": store.name,
            "labels": {k: v for k, v in store.labels.items() if k > 0},
            "labeled": len(cases),
            "train": sum(c.split == "train" for c in cases),
            "validation": sum(c.split == "validation" for c in cases),
            "unlabeled": len(store.unlabeled()),
            "versions": len(store.models.versions()),
            "active": active.version if active else None,
        }

    @staticmethod
    def describeSummary(summary: dict) -> str:
        """One line for the status label."""
        return _(
            "{labeled} labeled case(s) ({train} train, {validation} validation), {unlabeled} unlabeled; "
            "{versions} model version(s), active: {active}."
        ).format(**{**summary, "active": summary["active"] or _("none")})

    def modelRows(self, folder: str) -> list:
        """One dict per model version, oldest first, keyed by :data:`MODEL_COLUMNS` (strings for a table;
        ``dice`` is ``""`` when the version was not evaluated)."""
        store = self.openStore(folder)
        active = store.models.active()
        rows = []
        for v in store.models.versions():
            rows.append(
                {
                    "version": v.version,
                    "active": "yes" if active is not None and v.version == active.version else "",
                    "arch": v.arch or "",
                    "dice": f"{v.metrics['dice']:.4f}" if "dice" in v.metrics else "",
                    "metrics": ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())),
                    "evaluated on": _("{n} case(s)").format(n=len(v.evaluated_on)) if v.metrics else "",
                    "added": v.added,
                    "parent": v.parent or "",
                }
            )
        return rows

    def promote(self, folder: str, version: str, requireBetter: bool = True):
        """Make ``version`` the active model (SemiSAM Segment's auto-segment picks it up).

        With ``requireBetter`` it must have a higher validation Dice than the active version, measured on
        the same validation cases; otherwise ``semisam.store.RegistryError`` says why and nothing changes.
        """
        return self.openStore(folder).models.promote(version, require_better=requireBetter)

    def rollback(self, folder: str):
        """Make the previously active version active again; returns it (``RegistryError`` when none)."""
        return self.openStore(folder).models.rollback()
