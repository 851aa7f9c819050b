"""Shared behaviour of the ``tools/`` entry points."""
import sys
from typing import Callable

from .errors import SegtrainError

__all__ = ["one_line_errors"]


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
