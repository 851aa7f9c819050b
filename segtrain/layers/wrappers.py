"""Thin wrappers over ``torch.nn`` layers (Detectron2 style)."""
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["Conv2d", "c2_msra_fill", "c2_xavier_fill"]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm and activation.

    The norm is the submodule ``norm`` so checkpoint keys read ``<name>.norm.weight``
    (Detectron2 / Mask2Former naming); the activation is a plain callable (e.g.
    ``F.relu``) and holds no state.

    Extra keyword arguments: ``norm`` (an ``nn.Module`` or ``None``), ``activation``
    (a callable or ``None``). Input [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(self, *args, norm: Optional[nn.Module] = None, activation: Optional[Callable] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


# Caffe2-style initializers (same semantics as ``fvcore.nn.weight_init``; written here
# because importing ``fvcore.nn`` TorchScript-compiles its losses at import time).
def c2_msra_fill(module: nn.Module) -> None:
    """He (MSRA) normal init, fan_out, for convs followed by ReLU; bias 0."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2 "XavierFill": uniform in +-sqrt(3 / fan_in) (kaiming_uniform with a=1); bias 0."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)
