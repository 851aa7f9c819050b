"""The subcommands of ``tools/benchmark.py``, one module each (``train``, ``data``, ``eval``,
``criterion``, ``msda``, ``masks``), and the timing, memory and report helpers they share
(:mod:`tools.benchmarks.timing`). Each subcommand module has ``add_parser(subparsers)`` and
``run(args) -> int``; baselines come from ``tests/reference``.
"""

__all__ = []
