"""Non-overlapping window attention helpers (ViTDet / Hiera / SAM): split a feature map into
square windows, zero-padded to whole windows, and put it back together."""

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["window_partition", "window_unpartition"]


def window_partition(x: Tensor, window_size: int) -> Tuple[Tensor, Tuple[int, int]]:
    """[B, H, W, C] -> ([B * num_windows, ws, ws, C], (Hp, Wp)), zero-padded to whole windows."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(windows: Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]) -> Tensor:
    """Inverse of ``window_partition``: [B * num_windows, ws, ws, C] -> [B, H, W, C], the padding
    removed."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if hp > h or wp > w else x
