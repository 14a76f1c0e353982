"""`semisam store`: filled in by its issue; registers nothing until then."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Nothing to register yet."""
