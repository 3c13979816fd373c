"""What every airloop command line shares: the one-line error contract.

Each plane has its own parser (:mod:`airloop.runtime.cli`, :mod:`airloop.devstack.cli`,
:mod:`airloop.serving.cli`, :mod:`airloop.demo.cli`); :func:`run` gives them the same
behaviour: ``-v`` for debug logging, telemetry off, the settings read once and passed
to the command, and every failure ends with exactly
one ``error: …`` line on stderr and a non-zero exit code (an unexpected exception also
leaves its traceback above that line, for the log).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from airloop.core.errors import AirloopError
from airloop.core.settings import Settings, disable_telemetry, load


def plane_parser(description: str, metavar: str = "COMMAND"
                 ) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A plane's root parser (``airloop``, with the common options) and its sub-commands."""
    p = argparse.ArgumentParser(prog="airloop", description=description)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p, p.add_subparsers(dest="command", required=True, metavar=metavar)


def command_parser(sub: argparse._SubParsersAction, name: str, help_: str
                   ) -> argparse.ArgumentParser:
    """A sub-command that also takes the common options after its name
    (``airloop status -v`` as well as ``airloop -v status``)."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="debug logging")
    return p


def handler(target: str) -> Callable[[argparse.Namespace, Settings], int]:
    """The command ``"module:function"``, imported when it runs: a plane's CLI module
    stays light at import, and only the command asked for loads its libraries."""
    module_name, _, name = target.partition(":")

    def call(args: argparse.Namespace, settings: Settings) -> int:
        return getattr(importlib.import_module(module_name), name)(args, settings)

    call.__qualname__ = call.__name__ = name
    return call


def run(build: Callable[[Sequence[str]], argparse.ArgumentParser],
        argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (``sys.argv[1:]``) with ``build(argv)``, read the settings once and
    call ``args.func(args, settings)``.

    ``build`` receives the argv so that a parser may add the options of the one
    sub-command asked for without importing every other one.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    disable_telemetry()
    try:
        return int(args.func(args, load()) or 0)
    except AirloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # unexpected: keep the traceback for the log, end with one line
        traceback.print_exc(file=sys.stderr)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first}"[:1000], file=sys.stderr)
        return 1


def command(argv: Sequence[str], known: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: the first word that is not an option, when it
    is one of ``known`` (the common options take no value)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in known else None
    return None
