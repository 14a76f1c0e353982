"""Running a module's self-test under Slicer's *Reload and Test*: every test in turn, skips reported.

Slicer calls the Test class's ``runTest`` directly, inside ``slicer.util.tryWithErrorDisplay`` (no unittest
runner), so a ``unittest.SkipTest`` raised by one test would end the whole run with an error dialog and
the tests after it would never run. :func:`run_each` catches the skip of each test, reports it and goes
on; a failure still ends the run (that is what the dialog is for). :func:`require_packages` skips a test
that needs torch or another package of ``Resources/requirements.txt`` before they are installed (Slicer's
PyTorch extension installs torch on the first use of SemiSAM, not with the extension). No qt.
"""

from __future__ import annotations

import logging
import unittest
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)


def run_each(
    tests: Sequence[Callable[[], None]],
    set_up: Callable[[], None],
    report: Callable[[str], None],
) -> dict[str, str]:
    """Call ``set_up()`` then each test in order; returns ``{test name: "passed" | "skipped: <reason>"}``.

    A test that raises ``unittest.SkipTest`` is logged and reported with its reason (``report``: the Test
    class's ``delayDisplay``), and the next test runs. Any other exception ends the run (raised as is).
    The last report sums up what passed and what was skipped.
    """
    outcomes: dict[str, str] = {}
    for test in tests:
        name = getattr(test, "__name__", repr(test))
        set_up()
        try:
            test()
        except unittest.SkipTest as skip:
            outcomes[name] = f"skipped: {skip}"
            log.info("self-test %s skipped: %s", name, skip)
            report(f"{name} skipped: {skip}")
        else:
            outcomes[name] = "passed"
    skipped = [name for name, outcome in outcomes.items() if outcome != "passed"]
    summary = f"{len(outcomes) - len(skipped)} of {len(outcomes)} self-tests passed"
    report(summary + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    return outcomes


def missing_packages() -> list[str]:
    """torch (when the PyTorch extension has not installed it yet) and the missing requirements."""
    from . import dependencies

    missing = dependencies.missing_requirements()
    if not dependencies.torch_available():
        missing.insert(0, "torch")
    return missing


def require_packages(test: unittest.TestCase) -> None:
    """Skip ``test`` when torch or a package of ``Resources/requirements.txt`` is not installed yet."""
    missing = missing_packages()
    if missing:
        test.skipTest(
            f"needs Python packages that are not installed yet ({', '.join(missing)}); install them with "
            "'Install Python packages...' in SemiSAM Segment"
        )
