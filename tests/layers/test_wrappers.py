import pytest
import torch
import torch.nn.functional as F

from segtrain.layers import wrappers
from segtrain.layers.wrappers import Conv2d, conv2d_as_matmul


@pytest.mark.parametrize(
    "kernel,stride,padding,size",
    [
        (1, 1, 0, 4),
        (1, 1, 0, 7),
        (1, 2, 0, 8),
        (1, 2, 0, 7),
        (1, 3, 0, 10),
        (3, 1, 1, 4),
        (3, 2, 1, 8),
        (3, 2, 1, 7),
        (3, 1, 0, 5),
        (7, 2, 3, 9),
        (1, 1, 1, 3),
    ],
)
@pytest.mark.parametrize("bias", [False, True])
def test_conv2d_as_matmul_matches_conv2d_values_and_grads(kernel, stride, padding, size, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 6, size, size, requires_grad=True)
    w = torch.randn(5, 6, kernel, kernel, requires_grad=True)
    b = torch.randn(5, requires_grad=True) if bias else None
    ref = F.conv2d(x, w, b, stride, padding)
    out = conv2d_as_matmul(x, w, b, (stride, stride), (padding, padding))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _spy(monkeypatch):
    calls = []
    real = wrappers.conv2d_as_matmul

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(wrappers, "conv2d_as_matmul", spy)
    return calls


def test_conv2d_takes_matmul_path_only_for_small_outputs_or_strided_1x1(monkeypatch):
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
    conv3 = Conv2d(16, 8, kernel_size=3, padding=1)
    conv3(torch.randn(2, 16, 8, 8))  # 3x3, 64 output pixels: oneDNN
    assert len(calls) == 2
    x4 = torch.randn(2, 16, 4, 4)  # 3x3, 16 output pixels: matmul
    torch.testing.assert_close(conv3(x4), F.conv2d(x4, conv3.weight, conv3.bias, padding=1), rtol=1e-5, atol=1e-5)
    assert len(calls) == 3
    Conv2d(16, 8, kernel_size=3, padding=1, dilation=2)(x4)  # dilated: oneDNN
    assert len(calls) == 3
    monkeypatch.setattr(wrappers, "MATMUL_1X1_MAX_PIXELS", 0)  # switched off
    monkeypatch.setattr(wrappers, "MATMUL_KXK_MAX_PIXELS", 0)
    conv(small)
    conv3(x4)
    assert len(calls) == 3


@pytest.mark.parametrize("shape", [(7, 12), (2, 5, 12), (3, 1, 4, 12)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_f_linear_values_and_grads(shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(9, 12, requires_grad=True)
    b = torch.randn(9, requires_grad=True) if bias else None
    out, ref = wrappers.linear(x, w, b), F.linear(x, w, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    inputs = [x, w] + ([b] if bias else [])
    for got, want in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_takes_onednn_path_only_where_it_applies(monkeypatch):
    x, w = torch.randn(4, 6, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    onednn = "_OneDNNLinear" in type(wrappers.linear(x, w).grad_fn).__name__
    assert onednn == wrappers._HAS_ONEDNN
    assert "_OneDNNLinear" not in type(wrappers.linear(x.double(), w.double()).grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert wrappers.linear(x, w).dtype == torch.bfloat16  # autocast keeps its say
    monkeypatch.setattr(wrappers, "ONEDNN_MATMUL", False)
    assert "_OneDNNLinear" not in type(wrappers.linear(x, w).grad_fn).__name__


def test_linear_backward_of_an_expanded_gradient():
    # the gradient of .sum() arrives with stride 0
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    lin = wrappers.Linear(8, 3)
    lin(x).sum().backward()
    gx, gw = x.grad.clone(), lin.weight.grad.clone()
    x.grad = None
    lin.weight.grad = None
    F.linear(x, lin.weight, lin.bias).sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, lin.weight.grad, rtol=1e-5, atol=1e-5)


def test_linear_of_expanded_and_transposed_inputs():
    torch.manual_seed(0)
    w = torch.randn(5, 8)
    for x in (torch.randn(1, 3, 8).expand(4, 3, 8), torch.randn(8, 3).t(), torch.randn(3, 8, 4).transpose(1, 2)):
        torch.testing.assert_close(wrappers.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_shape", [(5, 6), (3, 5, 6)])
def test_matmul_matches_torch_matmul_values_and_grads(a_shape):
    torch.manual_seed(0)
    a = torch.randn(*a_shape, requires_grad=True)
    b = torch.randn(3, 6, 11, requires_grad=True)
    out, ref = wrappers.matmul(a, b), torch.matmul(a, b)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, [a, b], g), torch.autograd.grad(ref, [a, b], g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_linear_module_keeps_nn_linear_parameters():
    lin = wrappers.Linear(4, 2)
    assert isinstance(lin, torch.nn.Linear)
    assert sorted(lin.state_dict()) == ["bias", "weight"]
