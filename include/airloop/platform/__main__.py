"""``python -m airloop.platform up|down|status|logs`` (the platform commands alone)."""

import sys

from airloop.platform.cli import main

sys.exit(main())
