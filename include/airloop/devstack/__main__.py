"""``python -m airloop.devstack up|down|status|logs`` (the devstack's commands alone)."""

import sys

from airloop.devstack.cli import main

sys.exit(main())
