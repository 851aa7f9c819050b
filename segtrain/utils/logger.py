"""``setup_logger``: console (rank 0) and ``log.txt`` handlers for segtrain's loggers."""

import logging
import os
import sys
from typing import Optional

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s] %(name)s %(levelname)s: %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"


def _log_file(output: str, distributed_rank: int) -> str:
    if output.endswith(".txt") or output.endswith(".log"):
        filename = output
    else:
        filename = os.path.join(output, "log.txt")
    if distributed_rank > 0:
        filename = f"{filename}.rank{distributed_rank}"
    return filename


def setup_logger(
    output: Optional[str] = None, distributed_rank: int = 0, *, name: str = "segtrain", level: int = logging.DEBUG
) -> logging.Logger:
    """Configure logger ``name``: INFO and above to stdout on rank 0, everything to a file.

    output: a ``.txt`` / ``.log`` file, or a folder (then ``<folder>/log.txt``); ranks > 0
    write ``log.txt.rank<r>``. None: console only.
    Calling it again for the same logger replaces the handlers it added before (so a second
    run in one process logs to its own folder).
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "_segtrain_handler", False):
            logger.removeHandler(h)
            h.close()
    formatter = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    handlers = []
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.INFO)
        handlers.append(console)
    if output:
        filename = _log_file(output, distributed_rank)
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        handlers.append(fh)
    for h in handlers:
        h.setFormatter(formatter)
        h._segtrain_handler = True
        logger.addHandler(h)
    return logger
