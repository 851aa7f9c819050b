"""Engine tests configure loggers (setup_logger); give every test the logging state it found."""

import logging

import pytest

_NAMES = ("segtrain", "fvcore")


@pytest.fixture(autouse=True)
def _restore_loggers():
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in _NAMES
    }
    yield
    for n, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(n)
        for h in list(lg.handlers):
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.propagate, lg.level = propagate, level
