"""``airloop up | down | status | logs`` (also ``airloop-dev …``): the local platform.

``up`` starts the supervisor detached and waits until every component is healthy;
``down`` stops everything; ``status`` probes each component; ``logs`` shows a
component's log. The implementation (:mod:`airloop.devstack.commands`) is imported
when a command runs, so that routing any ``airloop`` command stays light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airloop.core import cli

IMPL = "airloop.devstack.commands"

#: The commands of this plane, with their one-line help.
COMMANDS = {
    "up": "start the local platform (idempotent) and wait until healthy",
    "down": "stop every component of the local platform",
    "status": "show components, URLs, health and Airflow credentials",
    "logs": "show a component's log (all components by default)",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The devstack's parser: ``up``, ``down``, ``status`` and ``logs``."""
    parser, sub = cli.plane_parser("The local platform (embedded defaults, one machine).")
    p = cli.command_parser(sub, "up", COMMANDS["up"])
    p.add_argument(
        "--database-url",
        default=None,
        help="existing PostgreSQL server (postgresql://user@host:port[/prefix]) instead of "
        "the embedded one; databases <prefix_>airflow and <prefix_>mlflow are created "
        "(default: AIRLOOP_DATABASE_URL)",
    )
    p.add_argument("--ray-cluster", action="store_true", help="also run a Ray head + worker node")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for health")
    p.set_defaults(func=cli.handler(f"{IMPL}:cmd_up"))

    p = cli.command_parser(sub, "down", COMMANDS["down"])
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the stop")
    p.set_defaults(func=cli.handler(f"{IMPL}:cmd_down"))

    p = cli.command_parser(sub, "status", COMMANDS["status"])
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cli.handler(f"{IMPL}:cmd_status"))

    p = cli.command_parser(sub, "logs", COMMANDS["logs"])
    p.add_argument("component", nargs="?", help="e.g. scheduler, airflow-api-server, mlflow")
    p.add_argument("-n", type=int, default=50, help="lines to show (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(func=cli.handler(f"{IMPL}:cmd_logs"))
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    """``airloop-dev up|down|status|logs`` (also reachable as ``airloop up`` …)."""
    return cli.run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
