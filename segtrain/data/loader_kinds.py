"""Loader kinds: which loader builders serve a configuration's datasets.

The image loaders (``build_train_loader`` / ``build_test_loader``) are the default; another
kind of data (e.g. video clips, ``segtrain.data.video``) registers its own builders with a
predicate saying when they apply. The engine asks ``select_loader_kind`` and never names a
kind itself.
"""

from dataclasses import dataclass
from typing import Any, Callable, List, Sequence

__all__ = ["LoaderKind", "register_loader_kind", "select_loader_kind"]


@dataclass(frozen=True)
class LoaderKind:
    """Builders of one kind of data.

    ``applies(cfg, dataset_names)``: whether this kind loads these datasets;
    ``train(cfg)``: the training loader; ``test(cfg, dataset_name)``: the test loader;
    ``val_loss(cfg, dataset_name, per_process, world)``: the validation-loss loader (the first
    ``TEST.VAL_LOSS.NUM_BATCHES x per_process x world`` items, in training-batch format).
    """

    name: str
    applies: Callable[[Any, Sequence[str]], bool]
    train: Callable[[Any], Any]
    test: Callable[[Any, str], Any]
    val_loss: Callable[[Any, str, int, int], Any]


_KINDS: List[LoaderKind] = []


def register_loader_kind(kind: LoaderKind) -> LoaderKind:
    """Add ``kind``; kinds are asked in registration order, the image kind last."""
    if any(k.name == kind.name for k in _KINDS):
        raise KeyError(f"loader kind {kind.name!r} is already registered")
    _KINDS.append(kind)
    return kind


def select_loader_kind(cfg, dataset_names: Sequence[str]) -> LoaderKind:
    """The first registered kind that applies to ``dataset_names`` (the image kind otherwise)."""
    for kind in _KINDS:
        if kind.name != "image" and kind.applies(cfg, dataset_names):
            return kind
    return next(k for k in _KINDS if k.name == "image")
