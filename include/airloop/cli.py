"""The ``airloop`` command line.

Platform commands (local mode): ``up``, ``down``, ``status``, ``logs``.
Pipeline steps: ``airloop <step> --project <name> --run-id <id>`` (see
:mod:`airloop.steps`). Helpers: ``generate`` (demo data), ``feedback`` (labels),
``demo`` (the whole loop). Every failure prints one ``error: …`` line and exits
non-zero; a step's JSON result goes to stdout and to the XCom file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from airloop.errors import AirloopError


def _add_step_commands(sub: argparse._SubParsersAction) -> None:
    from airloop.steps import STEP_MODULES, step_module

    for name in STEP_MODULES:
        p = sub.add_parser(name, help=f"pipeline step: {name.replace('_', ' ')}")
        p.add_argument("--project", required=True, help="project spec name")
        p.add_argument(
            "--run-id",
            default=None,
            help="DAG run id; outputs are keyed by it (default: manual__<utc time>)",
        )
        p.set_defaults(command="step", step=name)
        # Step-specific options are registered without importing the heavy module
        # unless this step was asked for (keeps `airloop --help` fast).
        if name in sys.argv[1:2]:
            module = step_module(name)
            if hasattr(module, "add_arguments"):
                module.add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airloop", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from airloop.platform import cli as platform_cli

    platform_cli.add_commands(sub)
    _add_step_commands(sub)

    from airloop.demo import cli as demo_cli
    from airloop.demo import loop as demo_loop
    from airloop.serving import cli as serving_cli

    demo_cli.add_commands(sub)
    demo_loop.add_commands(sub)
    serving_cli.add_commands(sub)
    return parser


def run_step(step: str, project: str, run_id: str | None, options: dict[str, Any]) -> dict:
    """Run one step in-process and return its result (also used by tests)."""
    from airloop import config
    from airloop.spec import load_spec
    from airloop.steps import step_module, write_result

    settings = config.load()
    spec = load_spec(project, settings.projects_dir)
    run_id = run_id or time.strftime("manual__%Y-%m-%dT%H:%M:%S", time.gmtime())
    started = time.monotonic()
    result = step_module(step).run(spec, run_id=run_id, settings=settings, **options)
    result = {"step": step, "project": project, "run_id": run_id, **result}
    result["seconds"] = round(time.monotonic() - started, 3)
    write_result(result, settings.xcom_path)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from airloop.config import NO_TELEMETRY
    import os

    for key, value in NO_TELEMETRY.items():
        os.environ.setdefault(key, value)
    try:
        if args.command == "step":
            options = {
                k: v
                for k, v in vars(args).items()
                if k not in {"command", "step", "project", "run_id", "verbose", "func"}
            }
            print("airloop: step started", args.step, file=sys.stderr, flush=True)
            result = run_step(args.step, args.project, args.run_id, options)
            print(json.dumps(result, default=str, sort_keys=True))
            return 0
        return int(args.func(args) or 0)
    except AirloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: keep the traceback for the log, end with one line
        import traceback

        traceback.print_exc(file=sys.stderr)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first}"[:1000], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
