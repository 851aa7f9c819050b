"""ResNet backbones (depth 18/34/50/101/152) with Detectron2 module and parameter names.

Parameter names follow Detectron2 (``stem.conv1.weight``, ``stem.conv1.norm.*``,
``res2.0.conv1.weight``, ``res2.0.conv1.norm.*``, ``res2.0.shortcut.weight``,
``res2.0.shortcut.norm.*``). ImageNet weights in torchvision format (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0/1``, ``fc``) are renamed by
``convert_torchvision_resnet_state_dict``; torchvision's ResNet is "v1.5" (stride in the
3x3 conv), i.e. ``MODEL.RESNETS.STRIDE_IN_1X1 = False`` (the segtrain default), and its
RGB input is normalised with the ImageNet mean / std in 0-255 units (``MODEL.PIXEL_MEAN/STD``).
"""

import logging
import re
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.layers.norm import FrozenBatchNorm2d, get_norm
from segtrain.layers.wrappers import Conv2d, c2_msra_fill
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError

from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "CNNBlockBase",
    "BasicBlock",
    "BottleneckBlock",
    "BasicStem",
    "ResNet",
    "build_resnet_backbone",
    "convert_torchvision_resnet_state_dict",
    "is_torchvision_resnet_state_dict",
]

logger = logging.getLogger(__name__)

# Blocks per stage (res2..res5) for each supported depth.
_NUM_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class CNNBlockBase(nn.Module):
    """A block with ``in_channels``, ``out_channels``, ``stride`` and ``freeze()``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def freeze(self) -> "CNNBlockBase":
        """requires_grad False for every parameter and every BN turned into FrozenBN."""
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs (ResNet-18/34) plus a projection shortcut when the shape changes.
    [B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN"):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        else:
            self.shortcut = None
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            kernel_size=3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(CNNBlockBase):
    """1x1 -> 3x3 (grouped, dilated) -> 1x1 bottleneck (ResNet-50+).

    ``stride_in_1x1``: put the stride in the first 1x1 conv (MSRA / Caffe2 "v1") instead
    of the 3x3 conv (torchvision "v1.5"). [B, in_channels, H, W] -> [B, out_channels,
    H / stride, W / stride].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ):
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            self.shortcut = Conv2d(
                in_channels, out_channels, kernel_size=1, stride=stride, bias=False, norm=get_norm(norm, out_channels)
            )
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=1,
            stride=stride_1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            kernel_size=3,
            stride=stride_3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv3 = Conv2d(
            bottleneck_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BasicStem(CNNBlockBase):
    """7x7 stride-2 conv + norm + ReLU + 3x3 stride-2 max pool: [B, 3, H, W] -> [B, C, H/4, W/4]."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels, out_channels, kernel_size=7, stride=2, padding=3, bias=False, norm=get_norm(norm, out_channels)
        )
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """Stem + stages ``res2``..``res5`` (each an ``nn.Sequential`` of blocks named 0, 1, ...).

    forward(x [B, 3, H, W]) -> {name: [B, C, H / stride, W / stride] for name in out_features};
    strides 4, 8, 16, 32 (res5 16 with dilation 2). Stages after the last requested
    output are not built.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[CNNBlockBase]],
        out_features: Optional[Sequence[str]] = None,
        freeze_at: int = 0,
    ):
        super().__init__()
        self.stem = stem
        current_stride = stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": stem.out_channels}
        self.stage_names: List[str] = []
        self.stages: List[nn.Module] = []
        for i, blocks in enumerate(stages):
            if len(blocks) == 0:
                raise ConfigError(f"ResNet stage res{i + 2} has no blocks")
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            for block in blocks:
                current_stride *= block.stride
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self.stage_names = tuple(self.stage_names)
        if out_features is None:
            out_features = [self.stage_names[-1]]
        valid = ("stem",) + self.stage_names
        for f in out_features:
            if f not in valid:
                raise ConfigError(f"ResNet: unknown output feature {f!r}; valid: {', '.join(valid)}")
        self._out_features = list(out_features)
        self.freeze(freeze_at)

    @property
    def size_divisibility(self) -> int:
        # Inputs that are multiples of the largest stride give feature maps that tile the
        # image exactly (H / 32 etc.), which the pixel decoders' upsampling assumes.
        return 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ResNet takes [B, C, H, W] inputs, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0) -> "ResNet":
        """Freeze the first ``freeze_at`` stages: 1 = stem, 2 = stem + res2, ... Frozen
        parameters get requires_grad False and frozen BN layers become FrozenBatchNorm2d
        (batch statistics of a frozen stage must not move either)."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        if freeze_at > 0:
            logger.info("ResNet: froze %s", ", ".join((["stem"] + list(self.stage_names))[:freeze_at]))
        return self

    @staticmethod
    def make_stage(
        block_class, num_blocks: int, *, in_channels: int, out_channels: int, first_stride: int = 1, **kwargs
    ) -> List[CNNBlockBase]:
        """``num_blocks`` blocks; only the first has stride ``first_stride`` and changes
        the channel count."""
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                block_class(
                    in_channels=in_channels, out_channels=out_channels, stride=first_stride if i == 0 else 1, **kwargs
                )
            )
            in_channels = out_channels
        return blocks


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> ResNet:
    """ResNet from ``MODEL.RESNETS`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    rc = cfg.MODEL.RESNETS
    in_channels = (
        input_shape.channels if input_shape is not None and input_shape.channels else len(cfg.MODEL.PIXEL_MEAN)
    )
    norm = rc.NORM
    depth = rc.DEPTH
    if depth not in _NUM_BLOCKS:
        raise ConfigError(f"MODEL.RESNETS.DEPTH={depth} is not supported; valid: {sorted(_NUM_BLOCKS)}")
    if rc.STEM_TYPE != "basic":
        raise ConfigError(f"MODEL.RESNETS.STEM_TYPE={rc.STEM_TYPE!r} is not supported; valid: 'basic'")
    stem = BasicStem(in_channels=in_channels, out_channels=rc.STEM_OUT_CHANNELS, norm=norm)

    out_features = list(rc.OUT_FEATURES)
    num_groups = rc.NUM_GROUPS
    width_per_group = rc.WIDTH_PER_GROUP
    bottleneck_channels = num_groups * width_per_group
    in_channels = rc.STEM_OUT_CHANNELS
    out_channels = rc.RES2_OUT_CHANNELS
    res5_dilation = rc.RES5_DILATION
    if res5_dilation not in (1, 2):
        raise ConfigError(f"MODEL.RESNETS.RES5_DILATION={res5_dilation} is not supported; valid: 1, 2")
    if depth in (18, 34):
        # Basic blocks have no expansion: res2 has 64 channels whatever RES2_OUT_CHANNELS says
        # (its default, 256, is the bottleneck value; Detectron2 makes users set 64 by hand).
        if out_channels != 64:
            logger.debug("ResNet-%d: RES2_OUT_CHANNELS=%d ignored (basic blocks use 64)", depth, out_channels)
        out_channels = 64
        if res5_dilation != 1:
            raise ConfigError(f"MODEL.RESNETS.RES5_DILATION must be 1 for ResNet-{depth}")
        if num_groups != 1:
            raise ConfigError(f"MODEL.RESNETS.NUM_GROUPS must be 1 for ResNet-{depth}")

    order = {"stem": 1, "res2": 2, "res3": 3, "res4": 4, "res5": 5}
    unknown = [f for f in out_features if f not in order]
    if unknown:
        raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES: unknown name(s) {unknown}; valid: {', '.join(order)}")
    max_stage_idx = max(order[f] for f in out_features)
    stages = []
    for idx, stage_idx in enumerate(range(2, max_stage_idx + 1)):
        # res5 with dilation 2 keeps stride 16 (DeepLab-style)
        dilation = res5_dilation if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        kwargs = dict(
            num_blocks=_NUM_BLOCKS[depth][idx],
            in_channels=in_channels,
            out_channels=out_channels,
            first_stride=first_stride,
            norm=norm,
        )
        if depth in (18, 34):
            blocks = ResNet.make_stage(BasicBlock, **kwargs)
        else:
            blocks = ResNet.make_stage(
                BottleneckBlock,
                bottleneck_channels=bottleneck_channels,
                num_groups=num_groups,
                stride_in_1x1=rc.STRIDE_IN_1X1,
                dilation=dilation,
                **kwargs,
            )
            bottleneck_channels *= 2
        stages.append(blocks)
        in_channels = out_channels
        out_channels *= 2
    return ResNet(stem, stages, out_features=out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


# torchvision name -> Detectron2 name, applied to the part after "layerN.M." / at the top.
_TV_BLOCK_RENAMES = [
    (re.compile(r"^conv(\d)\.(.*)$"), r"conv\1.\2"),
    (re.compile(r"^bn(\d)\.(.*)$"), r"conv\1.norm.\2"),
    (re.compile(r"^downsample\.0\.(.*)$"), r"shortcut.\1"),
    (re.compile(r"^downsample\.1\.(.*)$"), r"shortcut.norm.\1"),
]


def is_torchvision_resnet_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True if the keys look like torchvision's ResNet (``conv1.weight`` and ``layer1.*``)."""
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def convert_torchvision_resnet_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a torchvision ResNet state dict to this module's (Detectron2) names.

    ``conv1`` -> ``stem.conv1``, ``bn1`` -> ``stem.conv1.norm``, ``layer{i}.{j}.conv{k}`` ->
    ``res{i+1}.{j}.conv{k}``, ``layer{i}.{j}.bn{k}`` -> ``res{i+1}.{j}.conv{k}.norm``,
    ``layer{i}.{j}.downsample.0/1`` -> ``res{i+1}.{j}.shortcut`` / ``.shortcut.norm``; the
    classifier ``fc.*`` is dropped. BN ``num_batches_tracked`` entries are kept (BN uses
    them; FrozenBatchNorm2d ignores them). Tensors are not copied. The checkpoint loader
    calls this when ``is_torchvision_resnet_state_dict`` is true; prefix the result (e.g.
    ``backbone.``) to load it into a whole model. Raises ``ValueError`` naming the first key
    it cannot map.
    """
    out: Dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state_dict.items():
        if key.startswith("fc."):
            dropped.append(key)
            continue
        if key.startswith("conv1."):
            out["stem.conv1." + key[len("conv1.") :]] = value
            continue
        if key.startswith("bn1."):
            out["stem.conv1.norm." + key[len("bn1.") :]] = value
            continue
        m = re.match(r"^layer(\d+)\.(\d+)\.(.*)$", key)
        if m is None:
            raise ValueError(f"torchvision ResNet key {key!r} has no Detectron2 equivalent")
        stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
        for pattern, repl in _TV_BLOCK_RENAMES:
            if pattern.match(rest):
                out[f"res{stage + 1}.{block}.{pattern.sub(repl, rest)}"] = value
                break
        else:
            raise ValueError(f"torchvision ResNet key {key!r} has no Detectron2 equivalent")
    if dropped:
        logger.info("torchvision ResNet conversion: dropped classifier keys %s", ", ".join(dropped))
    return out
