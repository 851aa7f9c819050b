import pytest
import torch
import torch.nn.functional as F

from segtrain.layers import wrappers
from segtrain.layers.wrappers import Conv2d, conv1x1_as_matmul


@pytest.mark.parametrize("stride,size", [(1, 4), (1, 7), (2, 8), (2, 7), (3, 10)])
@pytest.mark.parametrize("bias", [False, True])
def test_conv1x1_as_matmul_matches_conv2d_values_and_grads(stride, size, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 6, size, size, requires_grad=True)
    w = torch.randn(5, 6, 1, 1, requires_grad=True)
    b = torch.randn(5, requires_grad=True) if bias else None
    ref = F.conv2d(x, w, b, stride)
    out = conv1x1_as_matmul(x, w, b, (stride, stride))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _spy(monkeypatch):
    calls = []
    real = wrappers.conv1x1_as_matmul

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(wrappers, "conv1x1_as_matmul", spy)
    return calls


def test_conv2d_takes_matmul_path_only_for_small_or_strided_1x1(monkeypatch):
    torch.manual_seed(0)
    calls = _spy(monkeypatch)
    norm = torch.nn.GroupNorm(2, 8)
    conv = Conv2d(16, 8, kernel_size=1, bias=False, norm=norm, activation=F.relu)
    small = torch.randn(2, 16, 8, 8)  # 64 output pixels: matmul
    ref = F.relu(norm(F.conv2d(small, conv.weight)))
    torch.testing.assert_close(conv(small), ref, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1
    conv(torch.randn(2, 16, 16, 16))  # 256 output pixels, stride 1: oneDNN
    assert len(calls) == 1
    strided = Conv2d(16, 8, kernel_size=1, stride=2)
    strided(torch.randn(2, 16, 32, 32))  # a stride: matmul at any size
    assert len(calls) == 2
    Conv2d(16, 8, kernel_size=3, padding=1)(torch.randn(2, 16, 4, 4))  # not 1x1
    assert len(calls) == 2
    monkeypatch.setattr(wrappers, "MATMUL_1X1_MAX_PIXELS", 0)  # switched off
    conv(small)
    assert len(calls) == 2
