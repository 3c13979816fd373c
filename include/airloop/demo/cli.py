"""``airloop demo`` and ``airloop generate`` — the demo's command line.

A command's implementation (numpy, pandas, the Airflow client) is imported when the
command runs, so that ``airloop --help`` and the other planes never load it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from airloop.core import cli

#: command -> (one-line help, implementing module, its handler)
_IMPLEMENTATION = {
    "demo": ("run the whole loop on a demo project through the REST APIs",
             "airloop.demo.loop", "run_demo"),
    "generate": ("write synthetic daily batches into a project's landing zone",
                 "airloop.demo.generate", "generate"),
}
#: The commands of this plane, with their one-line help.
COMMANDS = {name: help_ for name, (help_, _, _) in _IMPLEMENTATION.items()}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser, sub = cli.plane_parser("The demo: synthetic data and the whole loop over REST.")
    chosen = cli.command(argv, COMMANDS)
    for name, (help_, module_name, handler) in _IMPLEMENTATION.items():
        p = cli.command_parser(sub, name, help_)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=getattr(module, handler))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
