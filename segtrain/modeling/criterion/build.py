"""CRITERION registry, ``CORE_LOSS_KEY``, ``build_criterion`` and the output contract.

Output contract. Every criterion class declares

* ``required_output_keys``: the top-level keys of the prediction dict it reads, e.g.
  ``("pred_logits", "pred_masks")`` (``aux_outputs`` and other optional keys are not listed);
* ``target_format``: the targets it consumes, one of :data:`TARGET_FORMATS` (defined with the
  converters in ``segtrain.structures.targets``):
  ``"instances"`` (a per-image list of ``{labels, masks[, boxes]}``), ``"find_packed"``
  (the packed SAM 3 dict of docs/losses.md) or ``"video"`` (``[T, N, H, W]`` masks).

A meta-architecture lists the keys it produces in ``output_keys``;
:func:`check_criterion_outputs` refuses, at build time, a pairing whose meta-arch does
not produce every key the criterion needs. ``segtrain.structures.targets``
converts between the instance and find-packed target formats.
"""

from typing import Iterable

from segtrain.structures.targets import TARGET_FORMATS
from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import Registry

__all__ = [
    "CRITERION_REGISTRY",
    "CORE_LOSS_KEY",
    "TARGET_FORMATS",
    "build_criterion",
    "check_criterion_outputs",
    "criterion_required_keys",
]

# The one definition of the key every criterion returns its weighted total under.
CORE_LOSS_KEY = "core_loss"

CRITERION_REGISTRY = Registry("CRITERION")
CRITERION_REGISTRY.__doc__ = """Criteria, registered by class name; each has from_config(cfg),
a ``required_output_keys`` tuple and a ``target_format`` (one of TARGET_FORMATS)."""


def build_criterion(cfg):
    """The criterion named by ``cfg.MODEL.CRITERION.NAME``, built through its from_config."""
    return CRITERION_REGISTRY.get(cfg.MODEL.CRITERION.NAME)(cfg)


def criterion_required_keys(criterion) -> tuple:
    """The ``required_output_keys`` of a criterion instance or class (() when undeclared)."""
    return tuple(getattr(criterion, "required_output_keys", ()) or ())


def _name(obj) -> str:
    return obj if isinstance(obj, str) else (obj.__name__ if isinstance(obj, type) else type(obj).__name__)


def check_criterion_outputs(meta_arch_name, produced_keys: Iterable[str], criterion) -> None:
    """Raise a one-line ``ConfigError`` when the meta-arch does not produce every output key
    the criterion requires, or when the criterion declares an unknown ``target_format``.

    meta_arch_name: the meta-arch's name (or the model / its class); produced_keys: its
    ``output_keys``; criterion: the criterion instance or class.
    """
    arch = _name(meta_arch_name)
    crit = _name(criterion)
    produced = set(produced_keys or ())
    missing = [k for k in criterion_required_keys(criterion) if k not in produced]
    if missing:
        raise ConfigError(
            f"meta-architecture {arch!r} does not produce the outputs {missing} that criterion {crit!r} needs "
            f"(MODEL.CRITERION.NAME); it produces {sorted(produced)}"
        )
    fmt = getattr(criterion, "target_format", None)
    if fmt is not None and fmt not in TARGET_FORMATS:
        raise ConfigError(f"criterion {crit!r} declares target_format={fmt!r}; valid: {list(TARGET_FORMATS)}")
