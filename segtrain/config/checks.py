"""Start-up checks of a configuration, registered by the layer that owns each key.

Each package registers what it can check from a config alone: the names that select a
registered component (``register_name_key``), the config key holding a meta-architecture's
number of classes (``register_num_classes_key``) and any other check (``register_check``).
``run_checks(cfg)`` runs them all and returns one line per problem; the engine's start-up
validation imports every built-in package first so that their checks are registered.
"""

from typing import Callable, Dict, Iterable, List, Sequence, Tuple

from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import format_suggestions

from .cfg_node import all_keys, get_key

__all__ = [
    "ConfigProblems",
    "get_key",
    "num_classes_key",
    "register_check",
    "register_name_key",
    "register_num_classes_key",
    "run_checks",
]

#: ``fn(cfg, train, problems)``: append one line per problem found; ``train`` is True when
#: the training datasets are needed too (not only ``DATASETS.TEST``)
Check = Callable[[object, bool, List[str]], None]

_NAME_KEYS: List[Tuple[str, str, Callable[[], Iterable[str]]]] = []
_NUM_CLASSES_KEYS: Dict[str, str] = {}
_CHECKS: List[Tuple[Check, bool]] = []


def register_name_key(key: str, kind: str, valid_names: Callable[[], Iterable[str]]) -> None:
    """Check that config ``key`` (a string, or a list of strings) is one of ``valid_names()``;
    ``kind`` names the registry in messages (e.g. "CRITERION"). A key absent from a config,
    or set to "", is not checked."""
    _NAME_KEYS.append((key, kind, valid_names))


def register_num_classes_key(meta_arch: str, key: str) -> None:
    """Meta-architecture ``meta_arch`` reads its number of classes from config ``key``; it must
    equal the class count of every dataset (train and test) whose metadata lists its classes."""
    _NUM_CLASSES_KEYS[meta_arch] = key


def num_classes_key(meta_arch: str):
    """The config key registered for ``meta_arch``'s number of classes, or None."""
    return _NUM_CLASSES_KEYS.get(meta_arch)


def register_check(check: Check, *, train_only: bool = False) -> Check:
    """Run ``check(cfg, train, problems)`` at start-up (only for training runs when
    ``train_only``); checks run in registration order, after the name keys. Returns ``check``
    so that it can be used as a decorator."""
    _CHECKS.append((check, train_only))
    return check


def _check_names(cfg, problems: List[str]) -> None:
    """Name keys in the order of the config (as ``config.yaml`` lists them)."""
    position = {k: i for i, k in enumerate(all_keys(cfg))}
    for key, kind, valid_names in sorted(_NAME_KEYS, key=lambda entry: position.get(entry[0], len(position))):
        value = get_key(cfg, key)
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        valid = list(valid_names())
        for v in values:
            if v not in valid:
                problems.append(
                    f"{key}: no {kind} named {v!r}.{format_suggestions(str(v), valid)} "
                    f"Valid: {', '.join(map(str, valid)) or '(none registered)'}"
                )


def run_checks(cfg, *, train: bool = True) -> List[str]:
    """Every problem that the registered checks find in ``cfg``, one line each."""
    problems: List[str] = []
    _check_names(cfg, problems)
    for check, train_only in _CHECKS:
        if train or not train_only:
            check(cfg, train, problems)
    return [" ".join(str(p).split()) for p in problems]


class ConfigProblems(ConfigError):
    """Several configuration problems at once: ``problems`` (one line each); ``str`` is the
    lines joined by newlines. The entry scripts print one ``error:`` line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))
