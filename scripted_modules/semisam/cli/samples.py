"""``semisam samples fetch|list``: obtain and verify the real sample cases (pyradiomics 3.0.1 data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semisam import samples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("samples", help="fetch (from PyPI, SHA-256 verified) or list the sample cases")
    s = p.add_subparsers(dest="samples_command", metavar="ACTION", required=True)
    f = s.add_parser("fetch", help="download pyradiomics 3.0.1's sdist from PyPI and extract the cases")
    f.add_argument("--dest", type=Path, help=f"folder (default {samples.cache_dir()})")
    f.set_defaults(func=_fetch)
    ls = s.add_parser("list", help="where each verified case is, or that it is missing")
    ls.set_defaults(func=_list)


def _fetch(args: argparse.Namespace) -> int:
    folder = samples.fetch(args.dest)
    print(folder)
    return 0


def _list(args: argparse.Namespace) -> int:
    out = {}
    for name in samples.CASES:
        case = samples.find_case(name)
        out[name] = (
            None
            if case is None
            else {"image": str(case.image), "label": str(case.label), "modality": case.modality}
        )
    print(json.dumps(out, indent=2))
    return 0
