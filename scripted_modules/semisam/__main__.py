"""``python -m semisam …`` — the same as the ``semisam`` console script."""

import sys

from semisam.cli import main

sys.exit(main())
