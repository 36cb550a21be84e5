"""``python -m harness.explore explore ...`` / ``python -m harness.explore replay FILE``."""

import sys

from harness.explore.command import main

sys.exit(main())
