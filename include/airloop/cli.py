"""``airloop`` — one command line routed to the plane that owns each command.

Each plane has its own parser and entry point; this router only finds the plane of the
command asked for and hands it the whole argv, so ``airloop -v train …`` and
``airloop train -v …`` both work and no plane imports another:

| commands | plane | parser | own entry point |
|---|---|---|---|
| ``up``, ``down``, ``status``, ``logs`` | local devstack | :mod:`airloop.devstack.cli` | ``airloop-dev`` |
| ``ingest`` … ``batch_predict`` (the steps) | step runtime | :mod:`airloop.runtime.cli` | ``airloop-step`` |
| ``feedback``, ``predict`` | serving clients | :mod:`airloop.serving.cli` | |
| ``demo``, ``generate`` | demo | :mod:`airloop.demo.cli` | |

Every plane's CLI module is light at import (its commands import their
implementation when they run), so routing costs no heavy import. A plane that is not
installed (each image holds only its own) offers no commands.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from airloop.core import cli

#: The planes' CLI modules, in the order ``airloop --help`` lists them.
PLANES = {
    "local platform": "airloop.devstack.cli",
    "pipeline steps": "airloop.runtime.cli",
    "model endpoint": "airloop.serving.cli",
    "demo": "airloop.demo.cli",
}


def _modules():
    """The planes installed here: an image holds only its own planes (the runtime image
    has no devstack, the serving image no steps), and their commands are not offered."""
    found = {}
    for title, name in PLANES.items():
        try:
            found[title] = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not name.startswith(f"{exc.name}."):
                raise
    return found


def usage() -> str:
    lines = ["usage: airloop [-v] COMMAND [options]", "",
             "The airloop command line; `airloop COMMAND --help` for a command's options."]
    for title, module in _modules().items():
        lines += ["", f"{title}:"]
        lines += [f"  {name:<15} {help_}" for name, help_ in module.COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for module in _modules().values():
        if cli.command(argv, module.COMMANDS):
            return module.main(argv)
    words = [w for w in argv if not w.startswith("-")]
    if words:
        print(f"error: unknown command {words[0]!r}; `airloop --help` lists them", file=sys.stderr)
        return 2
    print(usage(), file=sys.stdout if {"-h", "--help"} & set(argv) else sys.stderr)
    return 0 if {"-h", "--help"} & set(argv) else 2


if __name__ == "__main__":
    sys.exit(main())
