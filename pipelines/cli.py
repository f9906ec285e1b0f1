"""The ``kiebeam`` command line: one subcommand per capability that exists."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kiebeam`` console script."""
    parser = argparse.ArgumentParser(prog="kiebeam", description=__doc__)
    parser.add_subparsers(dest="command", metavar="COMMAND")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
