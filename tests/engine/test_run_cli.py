"""run_cli in-process: exit codes, one stderr line, --debug re-raises."""

from argparse import Namespace

import pytest

from segtrain.engine import default_argument_parser, run_cli
from segtrain.engine.hooks import TrainingInterrupted
from segtrain.utils.errors import ConfigError


def _raise(exc):
    def main(args):
        raise exc

    return main


def test_user_error_is_one_line_exit_2(capsys):
    args = default_argument_parser().parse_args(["--config-file", "x.yaml", "SOLVER.BASE_LR", "0.1"])
    assert args.opts == ["SOLVER.BASE_LR", "0.1"] and args.dist_url == "auto" and args.num_gpus == 1
    assert run_cli(_raise(ConfigError("x.yaml: unknown config key 'A.B'")), args) == 2
    assert capsys.readouterr().err == "error: x.yaml: unknown config key 'A.B'\n"


def test_debug_reraises():
    args = default_argument_parser().parse_args(["--debug"])
    with pytest.raises(ConfigError):
        run_cli(_raise(ConfigError("bad")), args)


def test_interrupt_exit_130_and_success_0(capsys):
    args = Namespace(debug=False, num_gpus=1)
    assert run_cli(_raise(TrainingInterrupted("training interrupted by SIGTERM after iteration 3")), args) == 130
    assert capsys.readouterr().err.strip() == "error: training interrupted by SIGTERM after iteration 3"
    assert run_cli(lambda a: {"segm": {}}, args) == 0


def test_other_exceptions_propagate():
    with pytest.raises(ZeroDivisionError):
        run_cli(_raise(ZeroDivisionError()), Namespace(debug=False))


def test_module_flag_repeatable():
    args = default_argument_parser().parse_args(["--module", "a.py", "--module", "b", "--resume", "--eval-only"])
    assert args.module == ["a.py", "b"] and args.resume and args.eval_only
