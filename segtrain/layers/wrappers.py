"""Thin wrappers over ``torch.nn`` layers (Detectron2 style), and the matrix products they
run on CPU."""

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["Conv2d", "Linear", "conv2d_as_matmul", "linear", "matmul", "c2_msra_fill", "c2_xavier_fill"]

#: On CPU, float32 products of ``linear`` / ``matmul`` (forward and both backward products)
#: run on oneDNN's kernels (``torch.ops.mkldnn._linear_pointwise``, the library behind
#: PyTorch's CPU convolutions) instead of the BLAS that ``F.linear`` / ``torch.matmul`` call
#: (MKL). On AMD CPUs MKL takes its AVX2 code path while oneDNN uses AVX-512: 1.7-2x faster
#: at Mask2Former's shapes (docs/benchmarks.md). Same products, float round-off apart.
#: False: the plain ops everywhere.
ONEDNN_MATMUL = True
_HAS_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_applies(*tensors: torch.Tensor) -> bool:
    """float32 CPU tensors, oneDNN present, outside autocast and outside torch.compile."""
    return (
        ONEDNN_MATMUL
        and _HAS_ONEDNN
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.numel() > 0 for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def _mm_nt(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ w.T (+ bias)`` on oneDNN: x [..., K], w [N, K] (any strides) -> [..., N]."""
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _mm_nt(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        g = g.contiguous()  # the gradient of a sum is an expanded (stride 0) tensor
        g2 = g.reshape(-1, g.shape[-1])
        gx = _mm_nt(g, weight.t()) if ctx.needs_input_grad[0] else None  # g @ W: [..., in]
        gw = _mm_nt(g2.t(), x.reshape(-1, x.shape[-1]).t()) if ctx.needs_input_grad[1] else None  # g^T @ x
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear``, on oneDNN where ``ONEDNN_MATMUL`` applies. x [..., in], weight [out, in],
    bias [out] or None -> [..., out]."""
    if x.dim() >= 2 and _onednn_applies(x, weight, *([bias] if bias is not None else [])):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def _bmm_onednn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # a [M, K] or [B, M, K], b [B, K, N]: one 2-D product per batch element (B is small)
    return torch.stack([_mm_nt(a if a.dim() == 2 else a[i], b[i].t()) for i in range(b.shape[0])])


class _OneDNNMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bmm_onednn(a, b)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g = g.contiguous()
        ga = gb = None
        if ctx.needs_input_grad[0]:  # g @ b^T, summed over the batch for a shared a
            ga = torch.stack([_mm_nt(g[i], b[i]) for i in range(b.shape[0])])
            if a.dim() == 2:
                ga = ga.sum(0)
        if ctx.needs_input_grad[1]:  # a^T @ g
            gb = torch.stack([_mm_nt((a if a.dim() == 2 else a[i]).t(), g[i].t()) for i in range(b.shape[0])])
        return ga, gb


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` for a [M, K] or [B, M, K] and b [B, K, N] -> [B, M, N], on oneDNN
    where ``ONEDNN_MATMUL`` applies (one product per batch element)."""
    if b.dim() == 3 and a.dim() in (2, 3) and _onednn_applies(a, b):
        return _OneDNNMatmul.apply(a, b)
    return torch.matmul(a, b)


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
    """``F.conv2d(x, weight, bias, stride, padding)`` (one group, no dilation) as matrix
    products: ``weight [O, C*kh*kw] @ columns [C*kh*kw, H'*W']``, the columns being
    ``F.unfold`` of the input, or for a 1x1 kernel without padding the strided pixels
    themselves (no copy at stride 1). Where ``ONEDNN_MATMUL`` applies, one :func:`linear`
    over the batch's pixels; otherwise one BLAS product per image.

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
    if _onednn_applies(x, weight):
        # pixels as the rows of one oneDNN product for the whole batch, [B*H'*W', C*kh*kw] x
        # weight^T, then back to NCHW: 10-40% faster than the per-image BLAS products at 1 thread
        return linear(cols.transpose(1, 2), weight.reshape(o, -1), bias).transpose(1, 2).reshape(b, o, h, w)
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
