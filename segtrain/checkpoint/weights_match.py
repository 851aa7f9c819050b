"""Matching a weights file against a model: what loads, what is set aside, what stays new.

A weights file fills a model only when every model tensor finds a same-named, same-shaped tensor
in it and every tensor of the file finds its place. Anything else is refused with one line that
names the first tensors at fault, unless the config says it is intended:

* ``MODEL.WEIGHTS_NEW_PREFIXES``: model tensors under these name prefixes may stay at their
  initialization (missing from the file, or of another shape there: a new class head);
* ``MODEL.WEIGHTS_IGNORE_PREFIXES``: file tensors under these prefixes are dropped (parts of the
  released model this model does not have).

A model may also convert the file's names itself: a ``convert_weights(state)`` method returning
``(state under the model's names, file keys set aside on purpose)``; it must leave a state
already under the model's names as it is (resuming reads the model's own checkpoints).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from segtrain.utils.errors import CheckpointError

__all__ = ["WeightsMatch", "match_weights", "convert_weights_for"]

_SHOWN = 3  # tensors named per kind of problem in the error line


@dataclass
class WeightsMatch:
    """The outcome of matching a file's state dict against a model's.

    ``loaded``: model keys filled from the file; ``new``: model keys left at their
    initialization (allowed by the new-prefixes); ``set_aside``: file keys the model's
    ``convert_weights`` put aside; ``ignored``: file keys dropped by the ignore-prefixes.
    ``missing`` / ``mismatched`` / ``unexpected``: the problems (empty when the load is allowed).
    """

    total: int
    loaded: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    set_aside: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.unexpected)

    def summary(self) -> str:
        """``"284 of the model's 284 tensors loaded; 12 file tensors skipped (...); 0 left new"``."""
        skipped = len(self.set_aside) + len(self.ignored)
        why = []
        if self.set_aside:
            why.append(f"{len(self.set_aside)} set aside by the model, e.g. {self.set_aside[0]!r}")
        if self.ignored:
            why.append(f"{len(self.ignored)} under MODEL.WEIGHTS_IGNORE_PREFIXES")
        new = f"{len(self.new)} left new"
        if self.new:
            new += f" (MODEL.WEIGHTS_NEW_PREFIXES, e.g. {self.new[0]!r})"
        return (
            f"{len(self.loaded)} of the model's {self.total} tensors loaded; {skipped} file tensors skipped"
            + (f" ({'; '.join(why)})" if why else "")
            + f"; {new}"
        )

    def error(self, path: str) -> CheckpointError:
        """One line naming the first tensors of each problem and the config keys that allow it."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} model tensors not in the file ({_first(self.missing)})")
        if self.mismatched:
            shown = ", ".join(f"{k!r} {list(a)} in the file vs {list(b)}" for k, a, b in self.mismatched[:_SHOWN])
            parts.append(f"{len(self.mismatched)} of another shape ({shown})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} file tensors the model does not have ({_first(self.unexpected)})")
        hints = []
        new = _prefixes(self.missing + [k for k, _, _ in self.mismatched])
        if new:
            hints.append(f"MODEL.WEIGHTS_NEW_PREFIXES {new} to leave them new")
        if self.unexpected:
            hints.append(f"MODEL.WEIGHTS_IGNORE_PREFIXES {_prefixes(self.unexpected)} to drop them")
        return CheckpointError(
            f"weights {path} do not fit the model ({len(self.loaded)} of {self.total} tensors would load): "
            + "; ".join(parts)
            + f"; if that is intended (fine-tuning another head), set {' and '.join(hints)}"
        )


def _first(keys: Sequence[str]) -> str:
    more = f", ... {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(repr(k) for k in keys[:_SHOWN]) + more


def _prefixes(keys: Sequence[str]) -> List[str]:
    """The distinct top-two-level prefixes of ``keys`` (``'sem_seg_head.predictor.'``), in order."""
    out: List[str] = []
    for key in keys:
        parts = key.split(".")
        prefix = ".".join(parts[:2]) + "." if len(parts) > 2 else key
        if prefix not in out:
            out.append(prefix)
    return out


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def convert_weights_for(model: nn.Module, state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``model.convert_weights(state)`` when the model defines it, else ``(state, [])``."""
    convert = getattr(model, "convert_weights", None)
    if convert is None:
        return state, []
    return convert(state)


def match_weights(
    own: Dict[str, torch.Tensor],
    state: Dict[str, torch.Tensor],
    *,
    new_prefixes: Sequence[str] = (),
    ignore_prefixes: Sequence[str] = (),
    set_aside: Sequence[str] = (),
) -> Tuple[WeightsMatch, Dict[str, torch.Tensor]]:
    """Match ``state`` (a file's, under the model's names) against ``own`` (the model's state
    dict). Returns the match and the part of ``state`` to hand to ``load_state_dict(strict=False)``."""
    match = WeightsMatch(total=len(own), set_aside=list(set_aside))
    loadable = {}
    for key, value in state.items():
        if key not in own:
            (match.ignored if _under(key, ignore_prefixes) else match.unexpected).append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            if _under(key, new_prefixes):
                match.new.append(key)
            else:
                match.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            loadable[key] = value
            match.loaded.append(key)
    for key in own:
        if key not in state:
            (match.new if _under(key, new_prefixes) else match.missing).append(key)
    return match, loadable
