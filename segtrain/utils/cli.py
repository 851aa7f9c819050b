"""Shared behaviour of the ``tools/`` entry points."""

import argparse
import sys
from typing import Callable

from .errors import SegtrainError

__all__ = ["one_line_errors", "add_config_arguments"]


def one_line_errors(run: Callable[[], int], debug: bool = False) -> int:
    """Call ``run()`` and return its exit code; a :class:`SegtrainError` is written as one
    ``error: <message>`` line on stderr and gives exit code 2 (``debug`` re-raises it)."""
    try:
        return run()
    except SegtrainError as e:
        if debug:
            raise
        sys.stderr.write(f"error: {e}\n")
        return 2


def add_config_arguments(parser: argparse.ArgumentParser, overrides_help: str = "KEY VALUE config overrides") -> None:
    """The flags every config-driven tool shares: ``--config-file`` (required), ``--module``
    (repeatable user modules), ``--debug`` (tracebacks) and the trailing ``KEY VALUE`` overrides.
    Call it after the tool's own flags: the overrides are the last positional argument."""
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--module", action="append", default=[], help="user module to import first")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=overrides_help)
