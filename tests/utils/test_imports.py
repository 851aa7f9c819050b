"""User modules (config MODULES / --module) are imported before the build so they register."""

import textwrap

import pytest

from segtrain.config import load_config
from segtrain.utils.errors import ConfigError
from segtrain.utils.imports import import_user_modules


def test_module_from_config_key_registers_criterion(tmp_path, monkeypatch):
    pkg = tmp_path / "my_pkg_st"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text(
        textwrap.dedent("""
        from segtrain.modeling.criterion import CRITERION_REGISTRY

        @CRITERION_REGISTRY.register()
        class MyTestOnlyCriterion:
            def __init__(self, cfg):
                self.cfg = cfg

        def add_config(cfg):
            cfg.MY_KEY = 5
        """)
    )
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text(
        "MODULES: ['my_pkg_st.losses']\nMY_KEY: 7\nMODEL:\n  CRITERION:\n    NAME: MyTestOnlyCriterion\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(str(cfgfile))
    assert cfg.MY_KEY == 7  # the module's add_config ran before the merge
    from segtrain.modeling.criterion import CRITERION_REGISTRY, build_criterion

    assert "MyTestOnlyCriterion" in CRITERION_REGISTRY
    assert type(build_criterion(cfg)).__name__ == "MyTestOnlyCriterion"


def test_module_by_file_path(tmp_path):
    f = tmp_path / "user_mod_st.py"
    f.write_text("VALUE = 42\n")
    (mod,) = import_user_modules([str(f)])
    assert mod.VALUE == 42


def test_missing_module_one_line():
    with pytest.raises(ConfigError, match="cannot import user module 'no_such_pkg_xyz'"):
        import_user_modules(["no_such_pkg_xyz"])
    with pytest.raises(ConfigError, match="not found"):
        import_user_modules(["/nonexistent/dir/mod.py"])


def test_failing_module_is_named(tmp_path):
    f = tmp_path / "broken_st.py"
    f.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="broken_st.py.*RuntimeError: boom"):
        import_user_modules([str(f)])
