"""glibc ``malloc`` settings for training processes.

By default glibc serves every allocation above a dynamic threshold (128 KiB, growing to at
most 32 MiB) with a fresh ``mmap`` and returns it to the OS on ``free``, and trims the top
of the heap when more than twice that is free. A training step allocates and frees the same
large tensors every iteration (activations, gradients, sampled points), so on CPU every
step page-faults them back in: the kernel zeroes every 4 KiB page again (measured in
docs/benchmarks.md: tens of ms of system time per Mask2Former step on 2 cores).

:func:`tune_malloc` keeps freed memory in the process for reuse: no ``mmap`` for large
blocks (``M_MMAP_MAX = 0``) and no trimming below 2 GiB free (``M_TRIM_THRESHOLD``). The
price is that memory freed at a peak stays resident (the RSS stays near the peak instead of
falling back). It only changes where memory comes from, never a value.

Switch: the environment variable ``SEGTRAIN_MALLOC`` = ``tuned`` (default) or ``default``
(leave glibc alone). A no-op off Linux/glibc (musl, macOS, Windows), when ``mallopt`` is
missing, and when the user already set glibc's own ``MALLOC_*_`` variables or
``GLIBC_TUNABLES`` (theirs win).
"""

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Dict, Optional

from segtrain.utils.errors import ConfigError

__all__ = ["tune_malloc", "MALLOC_ENV"]

logger = logging.getLogger(__name__)

MALLOC_ENV = "SEGTRAIN_MALLOC"
_MODES = ("tuned", "default")

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB free at the top before trimming

_applied: Optional[Dict[str, int]] = None


def _glibc():
    """The C library through ctypes when it is glibc with ``mallopt``, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    fn = getattr(libc, "mallopt", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _user_settings() -> Optional[str]:
    for key in os.environ:
        if key == "GLIBC_TUNABLES" or (key.startswith("MALLOC_") and key.endswith("_")):
            return key
    return None


def tune_malloc(mode: Optional[str] = None) -> Optional[Dict[str, int]]:
    """Apply the glibc settings of the module docstring once per process.

    mode: ``tuned`` or ``default``; None reads ``SEGTRAIN_MALLOC`` (default ``tuned``).
    Returns the settings applied (``{"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": ...}``), or None
    when nothing was changed (mode ``default``, not glibc, or the user's own glibc settings).
    """
    global _applied
    if mode is None:
        mode = os.environ.get(MALLOC_ENV, "tuned").strip().lower() or "tuned"
    if mode not in _MODES:
        raise ConfigError(f"{MALLOC_ENV}={mode!r}: unknown malloc mode; valid: {', '.join(_MODES)}")
    if mode == "default":
        return None
    if _applied is not None:
        return _applied
    user = _user_settings()
    if user is not None:
        logger.info(f"malloc: {user} is set in the environment; leaving glibc's settings to it")
        return None
    mallopt = _glibc()
    if mallopt is None:
        return None
    settings = {"M_MMAP_MAX": (_M_MMAP_MAX, 0), "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)}
    done = {}
    for name, (param, value) in settings.items():
        if mallopt(param, value) == 1:  # mallopt returns 1 on success
            done[name] = value
    _applied = done
    logger.info(f"malloc: glibc {done} (freed memory is kept for reuse; {MALLOC_ENV}=default to disable)")
    return done
