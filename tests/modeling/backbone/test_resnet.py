"""ResNet backbone: shapes, parameter count, freezing, torchvision weight names."""

import pytest
import torch
from torch import nn

from segtrain.config import get_cfg
from segtrain.layers.norm import FrozenBatchNorm2d
from segtrain.modeling.backbone import (
    BACKBONE_REGISTRY,
    build_backbone,
    convert_torchvision_resnet_state_dict,
    is_torchvision_resnet_state_dict,
)
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError


def _cfg(depth=18, norm="BN", freeze_at=0, **resnets):
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    for k, v in resnets.items():
        setattr(cfg.MODEL.RESNETS, k, v)
    return cfg


def test_registered_under_default_name():
    assert get_cfg().MODEL.BACKBONE.NAME in BACKBONE_REGISTRY.names()


def test_resnet18_shapes():
    torch.manual_seed(0)
    model = build_backbone(_cfg(18))
    shapes = model.output_shape()
    assert shapes == {
        "res2": ShapeSpec(channels=64, stride=4),
        "res3": ShapeSpec(channels=128, stride=8),
        "res4": ShapeSpec(channels=256, stride=16),
        "res5": ShapeSpec(channels=512, stride=32),
    }
    out = model(torch.randn(2, 3, 64, 96))
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)
    assert model.size_divisibility == 32


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_torchvision():
    # torchvision resnet50 has 25,557,032 parameters, of which fc is 2048 * 1000 + 1000;
    # resnet18: 11,689,512 - (512 * 1000 + 1000).
    assert _n_params(build_backbone(_cfg(50))) == 25_557_032 - 2_049_000 == 23_508_032
    assert _n_params(build_backbone(_cfg(18))) == 11_689_512 - 513_000


def test_out_features_subset_and_dilation():
    model = build_backbone(
        _cfg(50, OUT_FEATURES=["res3"], RES2_OUT_CHANNELS=32, WIDTH_PER_GROUP=8, STEM_OUT_CHANNELS=16)
    )
    assert not hasattr(model, "res4") and set(model(torch.randn(1, 3, 32, 32))) == {"res3"}
    model = build_backbone(_cfg(50, RES5_DILATION=2, RES2_OUT_CHANNELS=32, WIDTH_PER_GROUP=8, STEM_OUT_CHANNELS=16))
    assert model.output_shape()["res5"].stride == 16
    assert model.res5[0].conv2.dilation == (2, 2)
    assert model(torch.randn(1, 3, 64, 64))["res5"].shape[-2:] == (4, 4)


def test_stride_placement():
    v15 = build_backbone(_cfg(50, STRIDE_IN_1X1=False))
    v1 = build_backbone(_cfg(50, STRIDE_IN_1X1=True))
    assert v15.res3[0].conv1.stride == (1, 1) and v15.res3[0].conv2.stride == (2, 2)
    assert v1.res3[0].conv1.stride == (2, 2) and v1.res3[0].conv2.stride == (1, 1)
    grouped = build_backbone(_cfg(50, NUM_GROUPS=32, WIDTH_PER_GROUP=4))  # ResNeXt-50 32x4d
    assert grouped.res2[0].conv2.groups == 32 and grouped.res2[0].conv2.in_channels == 128


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3])
def test_freeze_at(freeze_at):
    model = build_backbone(_cfg(18, freeze_at=freeze_at))
    stages = ["stem", "res2", "res3", "res4", "res5"]
    for i, name in enumerate(stages):
        module = getattr(model, name)
        frozen = i < freeze_at
        assert all(p.requires_grad != frozen for p in module.parameters()), name
        n_frozen_bn = sum(isinstance(m, FrozenBatchNorm2d) for m in module.modules())
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())
        assert (n_bn == 0 and n_frozen_bn > 0) if frozen else (n_frozen_bn == 0 and n_bn > 0), name
    # a frozen stage's statistics do not move in training mode
    model.train()
    before = {k: v.clone() for k, v in model.stem.state_dict().items()}
    model(torch.randn(2, 3, 32, 32))
    moved = any(not torch.equal(before[k], v) for k, v in model.stem.state_dict().items())
    assert moved == (freeze_at == 0)


def _torchvision_state_dict(depth):
    """A synthetic state dict with torchvision's ResNet names and shapes."""
    blocks = {18: [2, 2, 2, 2], 50: [3, 4, 6, 3]}[depth]
    bottleneck = depth >= 50
    g = torch.Generator().manual_seed(depth)
    sd = {}

    def conv(name, cout, cin, k):
        sd[name + ".weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(name, c):
        sd[name + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".bias"] = torch.randn(c, generator=g)
        sd[name + ".running_mean"] = torch.randn(c, generator=g)
        sd[name + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[name + ".num_batches_tracked"] = torch.tensor(100)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for i, n in enumerate(blocks):
        width = 64 * 2**i
        cout = width * 4 if bottleneck else width
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if bottleneck:
                conv(p + ".conv1", width, cin, 1), bn(p + ".bn1", width)
                conv(p + ".conv2", width, width, 3), bn(p + ".bn2", width)
                conv(p + ".conv3", cout, width, 1), bn(p + ".bn3", cout)
            else:
                conv(p + ".conv1", cout, cin, 3), bn(p + ".bn1", cout)
                conv(p + ".conv2", cout, cout, 3), bn(p + ".bn2", cout)
            if j == 0 and cin != cout:
                conv(p + ".downsample.0", cout, cin, 1), bn(p + ".downsample.1", cout)
            cin = cout
    sd["fc.weight"] = torch.randn(1000, cin, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_conversion_loads_strictly(depth):
    tv = _torchvision_state_dict(depth)
    assert is_torchvision_resnet_state_dict(tv)
    converted = convert_torchvision_resnet_state_dict(tv)
    assert not any(k.startswith("fc.") for k in converted)
    assert "stem.conv1.norm.running_var" in converted
    # res2.0 of a basic-block ResNet keeps its width (no shortcut conv); res3.0 always downsamples
    assert "res3.0.shortcut.norm.weight" in converted
    model = build_backbone(_cfg(depth, norm="BN"))
    model.load_state_dict(converted, strict=True)
    assert not is_torchvision_resnet_state_dict(model.state_dict())
    torch.testing.assert_close(model.stem.conv1.weight, tv["conv1.weight"])
    torch.testing.assert_close(model.res3[0].conv2.norm.running_mean, tv["layer2.0.bn2.running_mean"])
    # FrozenBN models load the same dict (num_batches_tracked dropped)
    frozen = build_backbone(_cfg(depth, norm="FrozenBN"))
    frozen.load_state_dict(converted, strict=True)
    torch.testing.assert_close(frozen.res4[0].shortcut.norm.weight, tv["layer3.0.downsample.1.weight"])
    # round trip: converted names are exactly the model's names
    assert set(converted) == set(model.state_dict())


def test_conversion_rejects_unknown_keys():
    with pytest.raises(ValueError, match="layer1.0.se.fc"):
        convert_torchvision_resnet_state_dict({"conv1.weight": torch.zeros(1), "layer1.0.se.fc.weight": torch.zeros(1)})


def test_config_errors():
    with pytest.raises(ConfigError):
        build_backbone(_cfg(42))
    with pytest.raises(ConfigError):
        build_backbone(_cfg(18, OUT_FEATURES=["res6"]))
    with pytest.raises(ConfigError):
        build_backbone(_cfg(18, RES5_DILATION=2))
