"""``airloop <step> --project <name> --run-id <id> …`` — the step runtime's command line.

The same argv in a pod and locally (the step contract). Only the module of the step
asked for is imported (each pulls in its heavy libraries), so ``--help`` stays fast.
The step's JSON result goes to stdout and to the XCom file; a failure is one
``error: …`` line and a non-zero exit (:mod:`airloop.core.cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from airloop.core import cli
from airloop.core.settings import Settings, load
from airloop.core.spec import load_spec
from airloop.runtime.steps import STEP_MODULES, step_module, write_result

#: The commands of this plane, with their one-line help.
COMMANDS = {name: f"pipeline step: {name.replace('_', ' ')}" for name in STEP_MODULES}
#: Arguments every step has; the rest are the step's own options.
COMMON = {"command", "step", "project", "run_id", "verbose", "func"}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser, sub = cli.plane_parser("Run one pipeline step of a project (the step contract).", "STEP")
    chosen = cli.command(argv, STEP_MODULES)
    for name, help_ in COMMANDS.items():
        p = cli.command_parser(sub, name, help_)
        p.add_argument("--project", required=True, help="project spec name")
        p.add_argument(
            "--run-id",
            default=None,
            help="DAG run id; outputs are keyed by it (default: manual__<utc time>)",
        )
        p.set_defaults(func=_step_command, step=name)
        if name == chosen:  # only the step asked for imports its module for its options
            module = step_module(name)
            if hasattr(module, "add_arguments"):
                module.add_arguments(p)
    return parser


def run_step(step: str, project: str, run_id: str | None, options: dict[str, Any],
             settings: Settings | None = None) -> dict:
    """Run one step in-process and return its result (also used by tests)."""
    settings = settings or load()
    spec = load_spec(project, settings.projects_dir)
    run_id = run_id or time.strftime("manual__%Y-%m-%dT%H:%M:%S", time.gmtime())
    started = time.monotonic()
    result = step_module(step).run(spec, run_id=run_id, settings=settings, **options)
    result = {"step": step, "project": project, "run_id": run_id, **result}
    result["seconds"] = round(time.monotonic() - started, 3)
    write_result(result, settings.xcom_path)
    return result


def _step_command(args: argparse.Namespace, settings: Settings) -> int:
    options = {k: v for k, v in vars(args).items() if k not in COMMON}
    print("airloop: step started", args.step, file=sys.stderr, flush=True)
    result = run_step(args.step, args.project, args.run_id, options, settings)
    print(json.dumps(result, default=str, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
