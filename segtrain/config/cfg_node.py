"""``CfgNode``: yacs-style config with ``_BASE_`` inheritance and one-line errors."""

import ast
import logging
import os
from typing import Any, Callable, List, Sequence

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import closest_matches

__all__ = ["CfgNode", "all_keys", "get_key", "register_config_addition", "CONFIG_ADDITIONS"]

logger = logging.getLogger(__name__)

_MISSING = object()  # CfgNode._lookup of a key that is not in the config


def get_key(cfg: _FvCfgNode, key: str, default: Any = None) -> Any:
    """The value (or group of keys) of ``cfg`` at the dotted ``key``, or ``default`` when any
    part is absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, _FvCfgNode) or part not in node:
            return default
        node = node[part]
    return node


def all_keys(cfg: _FvCfgNode, prefix: str = "") -> List[str]:
    """Every leaf key of ``cfg`` as a dotted path, e.g. ``MODEL.CRITERION.NAME``."""
    out = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        if isinstance(v, _FvCfgNode):
            out.extend(all_keys(v, full + "."))
        else:
            out.append(full)
    return out


def _suggest_keys(key: str, valid: Sequence[str]) -> str:
    if not any(add.__module__.startswith("segtrain.modeling") for add in CONFIG_ADDITIONS):
        return (
            " No model config node is registered: import segtrain.modeling (or segtrain.engine) "
            "before get_cfg() to have the model, criterion and family keys."
        )
    hits = closest_matches(key, valid)
    if not hits:  # a typo in the last component only: compare the leaf names
        leaf = key.rsplit(".", 1)[-1]
        hits = [
            v for v in valid if v.rsplit(".", 1)[-1] in closest_matches(leaf, [x.rsplit(".", 1)[-1] for x in valid])
        ][:3]
    return (" Closest valid keys: " + ", ".join(hits)) if hits else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, float)


def _coerce_types(new: _FvCfgNode, old: _FvCfgNode) -> None:
    """Coerce the values of ``new`` to the types of ``old`` where the intent is unambiguous
    (``_coerce_scalar``); yacs would otherwise reject them as type mismatches. Other mismatches
    (a string for a number, ...) are still errors naming the key."""
    for k, v in new.items():
        if k not in old:
            continue
        if isinstance(v, _FvCfgNode) and isinstance(old[k], _FvCfgNode):
            _coerce_types(v, old[k])
        else:
            decoded = _FvCfgNode._decode_cfg_value(v)  # as yacs will: "(1, 2)" in YAML is a tuple
            coerced = _coerce_scalar(decoded, old[k])
            if coerced is not decoded:
                new[k] = coerced


def _coerce_scalar(new: Any, old: Any) -> Any:
    """``new`` made the type of ``old`` where the intent is unambiguous: an int for a float
    (``LOSS_WEIGHT: 2``) and a single value for a tuple or list of that type
    (``INPUT.MIN_SIZE_TRAIN 64`` -> ``(64,)``); otherwise ``new`` unchanged."""
    if _is_int(new) and _is_float(old):
        return float(new)
    if isinstance(old, (tuple, list)) and isinstance(new, (int, float, str)) and not isinstance(new, bool):
        if new == "":
            return type(old)()  # "" for a tuple key means "none"
        item = _coerce_scalar(new, old[0]) if old else new
        if all(type(x) is type(item) for x in old):
            return type(old)([item])
    return new


CONFIG_ADDITIONS: List[Callable[["CfgNode"], None]] = []


def register_config_addition(add: Callable[["CfgNode"], None]) -> Callable[["CfgNode"], None]:
    """Have ``get_cfg`` apply ``add(cfg)`` (a family's or the loss library's ``add_*_config``)
    after the base defaults, in registration order. Returns ``add`` (usable as a decorator)."""
    if add not in CONFIG_ADDITIONS:
        CONFIG_ADDITIONS.append(add)
    return add


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` whose merge errors are one line naming the key (and file)."""

    def _check_known_keys(self, other: _FvCfgNode, source: str, prefix: str = "") -> None:
        valid = all_keys(self)
        for k, v in other.items():
            full = f"{prefix}{k}"
            if k == "_BASE_":
                continue
            node = self
            for part in full.split(".")[:-1]:
                node = node[part]
            if k not in node:
                if full.split(".")[0] == "VERSION":
                    continue
                raise ConfigError(f"{source}: unknown config key {full!r}.{_suggest_keys(full, valid)}")
            if isinstance(v, dict) and isinstance(node[k], _FvCfgNode):
                self._check_known_keys(_FvCfgNode(v) if not isinstance(v, _FvCfgNode) else v, source, full + ".")

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = True) -> None:
        """Merge a YAML file (following its ``_BASE_`` chain) into this config."""
        if not os.path.isfile(cfg_filename):
            raise ConfigError(f"config file not found: {cfg_filename!r}")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except yaml.YAMLError as e:
            msg = " ".join(str(e).split())
            raise ConfigError(f"{cfg_filename}: invalid YAML ({msg})") from e
        except FileNotFoundError as e:
            raise ConfigError(f"{cfg_filename}: _BASE_ file not found: {e.filename!r}") from e
        loaded = type(self)(loaded)
        self._check_known_keys(loaded, cfg_filename)
        _coerce_types(loaded, self)
        try:
            self.merge_from_other_cfg(loaded)
        except (ValueError, KeyError, AssertionError) as e:
            raise ConfigError(f"{cfg_filename}: {' '.join(str(e).split())}") from e

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` (command-line overrides)."""
        cfg_list = list(cfg_list)
        flags = [x for x in cfg_list if isinstance(x, str) and x.startswith("--")]
        if flags:
            raise ConfigError(
                f"command line: {flags[0]!r} is a flag among the KEY VALUE overrides; overrides go last "
                f"(e.g. train_net.py --config-file FILE {flags[0]} SOLVER.MAX_ITER 100)"
            )
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"command-line overrides must be KEY VALUE pairs; got an odd count ({len(cfg_list)}): {cfg_list}"
            )
        cfg_list = self._expand_dict_overrides(cfg_list)
        valid = all_keys(self)
        for i in range(0, len(cfg_list), 2):
            key, value = cfg_list[i], cfg_list[i + 1]
            old = self._lookup(key)
            if old is _MISSING:
                raise ConfigError(f"command line: unknown config key {key!r}.{_suggest_keys(key, valid)}")
            if not isinstance(old, _FvCfgNode):
                decoded = self._decode_cfg_value(value)
                coerced = _coerce_scalar(decoded, old)
                if coerced is not decoded:
                    cfg_list[i + 1] = coerced
        try:
            super().merge_from_list(cfg_list)
        except (ValueError, KeyError, AssertionError) as e:
            raise ConfigError(f"command line: {' '.join(str(e).split())}") from e

    def _lookup(self, key: str) -> Any:
        """The value (or group of keys) at dotted ``key``, or ``_MISSING``."""
        return get_key(self, key, _MISSING)

    def _expand_dict_overrides(self, cfg_list: List[Any]) -> List[Any]:
        """``KEY "{'a': 1, 'b': 2}"`` where KEY is a group of keys (e.g. a loss's ``WEIGHT_DICT``)
        -> ``KEY.a 1 KEY.b 2``: the dict is merged into the group as a YAML file's would be,
        and its entries are checked like any other override. Other pairs are kept as they are."""
        out: List[Any] = []
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            node = self._lookup(str(key))
            if not isinstance(node, _FvCfgNode):
                out.extend([key, value])
                continue
            try:
                parsed = ast.literal_eval(value) if isinstance(value, str) else value
            except (ValueError, SyntaxError):
                parsed = value
            if not isinstance(parsed, dict):
                raise ConfigError(
                    f"command line: {key} is a group of keys ({', '.join(sorted(node))}); set one with "
                    f"{key}.<name> VALUE or give a dict literal, got {value!r}"
                )
            pairs = [x for k, v in parsed.items() for x in (f"{key}.{k}", repr(v))]
            out.extend(self._expand_dict_overrides(pairs))
        return out

    def dump(self, *args, **kwargs) -> str:
        return super().dump(*args, **kwargs)
