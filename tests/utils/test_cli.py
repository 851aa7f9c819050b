"""Entry points turn user errors into one stderr line and exit code 2."""

import pytest

from segtrain.utils.cli import one_line_errors
from segtrain.utils.errors import ConfigError


def _fail():
    raise ConfigError("unknown config key 'X'")


def test_user_error_is_one_line_and_code_2(capsys):
    assert one_line_errors(_fail) == 2
    assert capsys.readouterr().err == "error: unknown config key 'X'\n"


def test_debug_reraises_and_success_passes_through():
    with pytest.raises(ConfigError):
        one_line_errors(_fail, debug=True)
    assert one_line_errors(lambda: 0) == 0


def test_other_exceptions_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        one_line_errors(lambda: 1 // 0)
