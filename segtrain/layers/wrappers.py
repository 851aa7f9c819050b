"""Thin wrappers over ``torch.nn`` layers (Detectron2 style)."""
from typing import Callable, Optional

import torch
from torch import nn

__all__ = ["Conv2d", "conv1x1_as_matmul", "c2_msra_fill", "c2_xavier_fill"]

#: On CPU, a 1x1 convolution with a stride or with at most this many output pixels per image
#: runs as a matrix product (:func:`conv1x1_as_matmul`). At these shapes (ResNet res4/res5 and
#: the strided shortcuts at Mask2Former's CPU input sizes) oneDNN's convolution backward is
#: 2-4x slower than the two products; above it oneDNN's forward is the faster one
#: (docs/benchmarks.md). 0 turns the path off.
MATMUL_1X1_MAX_PIXELS = 64


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
        if self._runs_as_matmul(x):
            x = conv1x1_as_matmul(x, self.weight, self.bias, self.stride)
        else:
            x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _runs_as_matmul(self, x: torch.Tensor) -> bool:
        if (x.device.type != "cpu" or x.dim() != 4 or self.kernel_size != (1, 1) or self.padding != (0, 0)
                or self.groups != 1 or MATMUL_1X1_MAX_PIXELS <= 0):
            return False
        h = (x.shape[-2] - 1) // self.stride[0] + 1
        w = (x.shape[-1] - 1) // self.stride[1] + 1
        return self.stride != (1, 1) or h * w <= MATMUL_1X1_MAX_PIXELS


def conv1x1_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      stride=(1, 1)) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride)`` for a 1x1 kernel (no padding, one group), as
    ``weight [O, C] @ x [B, C, H'*W']`` on the strided pixels.

    x [B, C, H, W], weight [O, C, 1, 1], bias [O] or None -> [B, O, ceil(H/s), ceil(W/s)].
    """
    if tuple(stride) != (1, 1):
        x = x[:, :, :: stride[0], :: stride[1]]
    b, c, h, w = x.shape
    y = torch.matmul(weight.reshape(weight.shape[0], c), x.reshape(b, c, h * w)).view(b, -1, h, w)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


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
