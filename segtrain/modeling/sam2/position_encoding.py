"""Position encodings of SAM 2 (the official ``position_encoding.py``): the normalized 2-D
sine encoding of feature maps (``PositionEmbeddingSine``), SAM's random Fourier encoding of
prompt coordinates (``PositionEmbeddingRandom``) and the axial 2-D rotary encoding of the
memory attention (``compute_axial_cis``, ``apply_rotary_enc``)."""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from segtrain.layers.position_encoding import PositionEmbeddingSine as SinePositionEncoding

__all__ = [
    "PositionEmbeddingSine",
    "PositionEmbeddingRandom",
    "init_t_xy",
    "compute_axial_cis",
    "apply_rotary_enc",
]


class PositionEmbeddingSine(SinePositionEncoding):
    """The official SAM 2 constructor of the shared sine encoding (``segtrain.layers``):
    ``num_pos_feats`` is the total channel count, half for y then half for x, normalized by
    default. forward(x [B, C, H, W]) -> [B, num_pos_feats, H, W] (depends only on H, W; cached)."""

    def __init__(
        self, num_pos_feats: int, temperature: float = 10000, normalize: bool = True, scale: Optional[float] = None
    ):
        if num_pos_feats % 2 != 0:
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be even, got {num_pos_feats}")
        super().__init__(num_pos_feats // 2, temperature, normalize, scale)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier position encoding (SAM): coordinates c in [0, 1]^2 ->
    ``[sin(2 pi (2c - 1) G), cos(...)]`` with a fixed Gaussian matrix G [2, num_pos_feats]."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None):
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> Tensor:
        """Dense encoding of an [h, w] grid of pixel centres -> [2 * num_pos_feats, h, w]."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: Tensor, image_size: Tuple[int, int]) -> Tensor:
        """Pixel coordinates (x, y) [B, P, 2] in an image of ``image_size`` (h, w) -> [B, P, C]."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))


def init_t_xy(end_x: int, end_y: int) -> Tuple[Tensor, Tensor]:
    """x and y of the tokens of an [end_y, end_x] map in row-major order, each [end_x * end_y]."""
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    return (t % end_x).float(), torch.div(t, end_x, rounding_mode="floor").float()


def compute_axial_cis(dim: int, end_x: int, end_y: int, theta: float = 10000.0) -> Tensor:
    """Axial rotary frequencies of an [end_y, end_x] map as unit complex numbers
    [end_x * end_y, dim / 2]: the first dim / 4 rotate with x, the last dim / 4 with y."""
    freqs_x = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    freqs_y = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t_x, t_y = init_t_xy(end_x, end_y)
    freqs_x = torch.outer(t_x, freqs_x)
    freqs_y = torch.outer(t_y, freqs_y)
    freqs_cis_x = torch.polar(torch.ones_like(freqs_x), freqs_x)
    freqs_cis_y = torch.polar(torch.ones_like(freqs_y), freqs_y)
    return torch.cat([freqs_cis_x, freqs_cis_y], dim=-1)


def apply_rotary_enc(xq: Tensor, xk: Tensor, freqs_cis: Tensor, repeat_freqs_k: bool = False) -> Tuple[Tensor, Tensor]:
    """Rotate queries [B, heads, Nq, D] and keys [B, heads, Nk, D] by ``freqs_cis`` [Nq, D / 2].
    With ``repeat_freqs_k`` the keys are Nk / Nq maps of the query grid (memory frames), each
    rotated like the queries. Keys with Nk = 0 pass through."""
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    if freqs_cis.shape != xq_.shape[-2:]:
        raise ValueError(f"apply_rotary_enc: freqs {tuple(freqs_cis.shape)} do not fit queries {tuple(xq_.shape)}")
    freqs_cis = freqs_cis.view(1, 1, *freqs_cis.shape)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    if xk.shape[-2] == 0:
        return xq_out.type_as(xq), xk
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    if repeat_freqs_k:
        r = xk_.shape[-2] // xq_.shape[-2]
        # expand + flatten: repeat() on complex tensors is not supported on every device
        freqs_cis = freqs_cis.unsqueeze(2).expand(-1, -1, r, -1, -1).flatten(2, 3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)
