"""FrozenBatchNorm2d, get_norm and the Conv2d wrapper."""

import pytest
import torch
from torch import nn

from segtrain.layers.norm import FrozenBatchNorm2d, get_norm
from segtrain.layers.wrappers import Conv2d
from segtrain.utils.errors import ConfigError


def _random_bn(c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.1)
    return bn


def test_frozen_bn_equals_eval_bn():
    bn = _random_bn().eval()
    frozen = FrozenBatchNorm2d(8)
    frozen.load_state_dict(bn.state_dict())  # strict, with num_batches_tracked in the dict
    x = torch.randn(2, 8, 5, 3, generator=torch.Generator().manual_seed(1))
    frozen.train()  # frozen statistics whatever the mode
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)
    assert not list(frozen.parameters())  # buffers only
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}


def test_convert_frozen_batchnorm_replaces_children_and_keeps_values():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), _random_bn())
    model.eval()
    x = torch.randn(1, 3, 4, 4)
    expected = model(x)
    FrozenBatchNorm2d.convert_frozen_batchnorm(model)
    assert isinstance(model[1], FrozenBatchNorm2d)
    torch.testing.assert_close(model(x), expected)
    single = FrozenBatchNorm2d.convert_frozen_batchnorm(_random_bn())
    assert isinstance(single, FrozenBatchNorm2d)


def test_get_norm_names():
    assert isinstance(get_norm("BN", 32), nn.BatchNorm2d)
    # single process: SyncBN falls back to BN
    sync = get_norm("SyncBN", 32)
    assert type(sync) is nn.BatchNorm2d
    assert isinstance(get_norm("FrozenBN", 32), FrozenBatchNorm2d)
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    assert get_norm("", 32) is None and get_norm(None, 32) is None
    assert isinstance(get_norm(lambda c: nn.LayerNorm(c), 16), nn.LayerNorm)


def test_get_norm_errors_are_one_line():
    with pytest.raises(ConfigError) as e:
        get_norm("Bn", 32)
    assert "\n" not in str(e.value) and "'BN'" in str(e.value)
    with pytest.raises(ConfigError):
        get_norm("GN", 48)


def test_conv2d_wrapper_norm_activation_and_keys():
    conv = Conv2d(3, 32, kernel_size=3, padding=1, bias=False, norm=get_norm("GN", 32), activation=torch.relu)
    assert set(conv.state_dict()) == {"weight", "norm.weight", "norm.bias"}
    y = conv(torch.randn(2, 3, 6, 5))
    assert y.shape == (2, 32, 6, 5) and (y >= 0).all()
    plain = Conv2d(3, 4, kernel_size=1)
    x = torch.randn(1, 3, 2, 2)
    torch.testing.assert_close(plain(x), nn.functional.conv2d(x, plain.weight, plain.bias))
