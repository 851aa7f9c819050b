"""Fixture of the reliability tests: ``records``, everything segtrain logs during a test,
whatever ``setup_logger`` did to propagation."""

import logging

import pytest


class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.INFO) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@pytest.fixture
def records():
    """Records of the ``segtrain`` logger (set to DEBUG for the test, so a trainer built in the
    test does not install its console / file handlers); its state is restored after."""
    lg = logging.getLogger("segtrain")
    saved = list(lg.handlers), lg.propagate, lg.level
    h = LogRecords()
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    yield h
    for other in list(lg.handlers):
        if other not in saved[0]:
            lg.removeHandler(other)
            other.close()
    lg.propagate, lg.level = saved[1], saved[2]
