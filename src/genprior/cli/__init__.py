"""``genprior`` command line: one module per sub-command, each with ``register(subparsers)``.

Every sub-command's handler returns an exit status; a :class:`genprior.errors.UserError` becomes
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ..errors import UserError

#: sub-command modules, in the order ``--help`` lists them
COMMANDS = ("solve", "demo", "train", "bench", "theory", "convert", "methods")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage block is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="genprior",
        description="Solve imaging inverse problems with pretrained generative priors (ILO, CSGM, ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:  # a sub-command not written yet
            if e.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"genprior {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genprior: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
