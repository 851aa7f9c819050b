"""``get_cfg`` (base defaults plus registered additions), ``load_config`` and ``configurable``."""

import ast
import functools
import inspect
import os
from typing import Iterable, List, Optional, Sequence

from fvcore.common.config import CfgNode as _FvCfgNode

from segtrain.utils.errors import ConfigError
from segtrain.utils.imports import import_user_modules

from .cfg_node import CONFIG_ADDITIONS, CfgNode, all_keys, register_config_addition
from .defaults import _C

__all__ = [
    "CfgNode",
    "all_keys",
    "configurable",
    "get_cfg",
    "load_config",
    "read_modules_from_yaml",
    "register_config_addition",
]


def get_cfg() -> CfgNode:
    """A fresh copy of all defaults: the base keys plus the node of every registered addition
    (``import segtrain.modeling`` registers the loss library's and every built-in family's)."""
    cfg = _C.clone()
    for add in CONFIG_ADDITIONS:
        add(cfg)
    return cfg


def read_modules_from_yaml(cfg_filename: str) -> List[str]:
    """The ``MODULES`` list of a YAML file and its ``_BASE_`` chain, read before the merge
    so that user modules can register components (and config keys) first."""
    if not cfg_filename or not os.path.isfile(cfg_filename):
        return []
    try:
        loaded = _FvCfgNode.load_yaml_with_base(cfg_filename, allow_unsafe=True)
    except Exception:
        return []  # the real merge reports the problem
    mods = loaded.get("MODULES", []) if isinstance(loaded, dict) else []
    return list(mods or [])


def load_config(config_file: Optional[str], opts: Sequence[str] = (), modules: Iterable[str] = ()) -> CfgNode:
    """``get_cfg`` + user modules + file + command-line overrides, then ``MODULES`` recorded.

    User modules (``--module`` and the config's ``MODULES``) are imported first so their
    ``@X_REGISTRY.register()`` decorators run and their ``add_config(cfg)`` (if any) adds keys.
    """
    opts = list(opts or [])
    mods = list(modules or []) + read_modules_from_yaml(config_file or "")
    if "MODULES" in opts[0::2]:
        i = opts[0::2].index("MODULES")
        try:
            mods += list(ast.literal_eval(opts[2 * i + 1]))
        except (ValueError, SyntaxError) as e:
            raise ConfigError(f"command line: MODULES must be a list literal, got {opts[2 * i + 1]!r}") from e
    imported = import_user_modules(mods)
    cfg = get_cfg()
    for m in imported:
        add = getattr(m, "add_config", None)
        if callable(add):
            add(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODULES = list(dict.fromkeys(list(cfg.MODULES) + list(modules or [])))
    return cfg


def configurable(init_func=None, *, from_config=None):
    """Let a constructor take either its plain arguments or a ``cfg``.

    On ``__init__``: ``Cls(cfg, ...)`` calls ``Cls.from_config(cfg, ...)`` for the keyword
    arguments; ``Cls(a=1, ...)`` is a plain call. On a function, ``from_config`` is given.
    """

    def _is_cfg_call(args, kwargs):
        if args and isinstance(args[0], _FvCfgNode):
            return True
        return isinstance(kwargs.get("cfg"), _FvCfgNode)

    def _call_from_config(fn, args, kwargs):
        sig = inspect.signature(fn)
        if "cfg" not in sig.parameters:
            raise TypeError(f"{fn.__qualname__} must take 'cfg' as its first argument")
        bound = sig.bind_partial(*args, **kwargs)
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            extra = {k: v for k, v in bound.arguments.items() if k not in sig.parameters}
            assert not extra
        return fn(*args, **kwargs)

    if init_func is not None:
        assert inspect.isfunction(init_func) and init_func.__name__ == "__init__", (
            "@configurable without arguments decorates __init__"
        )

        @functools.wraps(init_func)
        def wrapped(self, *args, **kwargs):
            if _is_cfg_call(args, kwargs):
                from_cfg = getattr(type(self), "from_config", None)
                if from_cfg is None:
                    raise AttributeError(f"{type(self).__name__} is @configurable but has no from_config")
                explicit = _call_from_config(from_cfg, args, kwargs)
                init_func(self, **explicit)
            else:
                init_func(self, *args, **kwargs)

        return wrapped

    assert from_config is not None and inspect.isfunction(from_config)

    def deco(func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            if _is_cfg_call(args, kwargs):
                return func(**_call_from_config(from_config, args, kwargs))
            return func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return deco
