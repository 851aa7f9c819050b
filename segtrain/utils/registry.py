"""Name -> object registries (fvcore ``Registry``) whose errors suggest the closest names."""

import difflib
from typing import Any, Iterable, List

from fvcore.common.registry import Registry as _FvRegistry

from .errors import UnknownNameError

__all__ = ["Registry", "closest_matches", "format_suggestions"]


def closest_matches(name: str, choices: Iterable[str], n: int = 3) -> List[str]:
    """The ``n`` entries of ``choices`` closest to ``name`` (case-insensitive first)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def format_suggestions(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' or '' when nothing is close."""
    hits = closest_matches(name, choices)
    if not hits:
        return ""
    return " Did you mean " + " or ".join(repr(h) for h in hits) + "?"


class Registry(_FvRegistry):
    """fvcore ``Registry`` whose unknown-name error is one line listing the valid names
    and the closest match, and whose duplicate-registration error names the registry."""

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise ValueError(f"An object named {name!r} was already registered in the {self._name} registry")
        self._obj_map[name] = obj

    def get(self, name: str) -> Any:
        ret = self._obj_map.get(name)
        if ret is None:
            names = sorted(self._obj_map)
            raise UnknownNameError(
                f"No {self._name} named {name!r} is registered.{format_suggestions(name, names)} "
                f"Registered: {', '.join(names) if names else '(none)'}"
            )
        return ret

    def names(self) -> List[str]:
        return sorted(self._obj_map)
