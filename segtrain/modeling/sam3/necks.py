"""SAM 3's neck: a ViTDet simple feature pyramid on the trunk's last feature map."""

from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

__all__ = ["Sam3DualViTDetNeck"]


class Sam3DualViTDetNeck(nn.Module):
    """Scales the trunk's stride-p map by each of ``scale_factors`` (4, 2, 1, 0.5) with transposed
    convs / max-pool, then 1x1 and 3x3 convs to ``d_model`` (``convs.{i}``).

    ``forward(images)`` returns ``(features, positions, None, None)``: lists of [B, d_model, h, w]
    maps, largest first, and their sine encodings. The official module can hold a second copy of
    these convs for the SAM 2 tracker (``sam2_convs``); the image model does not build it.
    """

    def __init__(
        self,
        trunk: nn.Module,
        position_encoding: nn.Module,
        d_model: int,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
    ):
        super().__init__()
        self.trunk = trunk
        self.position_encoding = position_encoding
        self.scale_factors = tuple(scale_factors)
        dim = self.trunk.channel_list[-1]
        self.convs = nn.ModuleList()
        for scale in self.scale_factors:
            current = nn.Sequential()
            if scale == 4.0:
                current.add_module("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
                current.add_module("gelu", nn.GELU())
                current.add_module("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2))
                out_dim = dim // 4
            elif scale == 2.0:
                current.add_module("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
                out_dim = dim // 2
            elif scale == 1.0:
                out_dim = dim
            elif scale == 0.5:
                current.add_module("maxpool_2x2", nn.MaxPool2d(kernel_size=2, stride=2))
                out_dim = dim
            else:
                raise ValueError(f"Sam3DualViTDetNeck: scale factor {scale} is not one of 4.0, 2.0, 1.0, 0.5")
            current.add_module("conv_1x1", nn.Conv2d(out_dim, d_model, kernel_size=1))
            current.add_module("conv_3x3", nn.Conv2d(d_model, d_model, kernel_size=3, padding=1))
            self.convs.append(current)

    def forward(
        self, images: Tensor, num_levels: Optional[int] = None
    ) -> Tuple[List[Tensor], List[Tensor], None, None]:
        """``num_levels`` computes only the first levels (the model drops the last, see ``scalp``)."""
        x = self.trunk(images)[-1]
        features, positions = [], []
        for conv in self.convs[: len(self.convs) if num_levels is None else num_levels]:
            out = conv(x)
            features.append(out)
            positions.append(self.position_encoding(out).to(out.dtype))
        return features, positions, None, None
