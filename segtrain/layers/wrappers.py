"""Thin wrappers over ``torch.nn`` layers (Detectron2 style)."""

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2d", "conv2d_as_matmul", "c2_msra_fill", "c2_xavier_fill"]

#: On CPU, small convolutions run as matrix products (:func:`conv2d_as_matmul`): a 1x1
#: convolution with a stride or with at most ``MATMUL_1X1_MAX_PIXELS`` output pixels per image,
#: a larger kernel with at most ``MATMUL_KXK_MAX_PIXELS``. At these shapes (ResNet res4/res5
#: and the strided shortcuts at Mask2Former's CPU input sizes) oneDNN's convolution, its
#: backward above all, is 2-4x slower than the products; above them oneDNN is the faster one
#: (docs/benchmarks.md). 0 turns a path off.
MATMUL_1X1_MAX_PIXELS = 64
MATMUL_KXK_MAX_PIXELS = 16


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
            x = conv2d_as_matmul(x, self.weight, self.bias, self.stride, self.padding)
        else:
            x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def _runs_as_matmul(self, x: torch.Tensor) -> bool:
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or self.groups != 1
            or self.dilation != (1, 1)
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            return False
        h, w = _conv_output_hw(x, self.kernel_size, self.stride, self.padding)
        if self.kernel_size == (1, 1) and self.padding == (0, 0):
            return MATMUL_1X1_MAX_PIXELS > 0 and (self.stride != (1, 1) or h * w <= MATMUL_1X1_MAX_PIXELS)
        return h * w <= MATMUL_KXK_MAX_PIXELS


def _conv_output_hw(x: torch.Tensor, kernel, stride, padding):
    """(H', W') of a convolution (no dilation) of x [..., H, W]: ``(H + 2*padding - k) // stride + 1``."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(x.shape[-2:], kernel, stride, padding))


def conv2d_as_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride=(1, 1), padding=(0, 0)
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding)`` (one group, no dilation) as one matrix
    product per image: ``weight [O, C*kh*kw] @ columns [C*kh*kw, H'*W']``, the columns being
    ``F.unfold`` of the input, or for a 1x1 kernel without padding the strided pixels
    themselves (no copy at stride 1).

    x [B, C, H, W], weight [O, C, kh, kw], bias [O] or None -> [B, O, H', W'] with
    ``H' = (H + 2*padding - kh) // stride + 1`` (likewise W').
    """
    b, o = x.shape[0], weight.shape[0]
    kernel, stride, padding = tuple(weight.shape[-2:]), tuple(stride), tuple(padding)
    h, w = _conv_output_hw(x, kernel, stride, padding)
    if kernel == (1, 1) and padding == (0, 0):
        cols = x[:, :, :: stride[0], :: stride[1]].reshape(b, x.shape[1], h * w)
    else:
        cols = F.unfold(x, kernel, padding=padding, stride=stride)  # [B, C*kh*kw, H'*W']
    y = torch.matmul(weight.reshape(o, -1), cols).view(b, o, h, w)
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
