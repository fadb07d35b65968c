"""python -m engine ...: run, submit and inspect runs; tag, annotate, archive and delete them; list what the
registries hold. One module per family of commands, each adding its own to the parser."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from engine.ablation import AblationError
from engine.cli import catalog, groups, inspection, report, runs
from engine.cli.common import EXIT_INVALID
from engine.spec import SpecError
from engine.store import WorkspaceError

__all__ = ["EXIT_INVALID", "main"]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (SpecError, WorkspaceError, AblationError) as err:  # a catalog's CatalogError is a WorkspaceError
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="PathScope engine")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    for family in (runs, catalog, groups, inspection, report):
        family.register(command)
    return parser
