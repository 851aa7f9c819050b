"""META_ARCH registry and ``build_model``."""

import logging

import torch

from segtrain.modeling.criterion.build import check_criterion_outputs
from segtrain.utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model", "resolve_device"]

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """Meta-architectures: class(cfg) -> nn.Module.

``forward(batched_inputs: list[dict])`` returns the loss dict (with ``core_loss``) in
training and a list of per-image result dicts in eval. A meta-arch lists the criterion
outputs it produces in ``output_keys`` (a set of top-level keys of its prediction dict)."""


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg) -> torch.nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE``, move it to ``cfg.MODEL.DEVICE``.

    When the model has a ``criterion`` and declares ``output_keys``, the pairing is checked
    (``check_criterion_outputs``): a criterion needing outputs the meta-arch does not
    produce fails here, with a one-line error, not in the first training step."""
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    criterion = getattr(model, "criterion", None)
    output_keys = getattr(model, "output_keys", None)
    if criterion is not None and output_keys is not None:
        check_criterion_outputs(cfg.MODEL.META_ARCHITECTURE, output_keys, criterion)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    return model
