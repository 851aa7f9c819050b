"""Point sampling of mask logits (PointRend / Mask2Former), docs/losses.md "Functional pieces".

Coordinates are normalized to [0, 1]^2 as ``(x, y)``; ``(0, 0)`` is the top-left
corner of the top-left pixel and ``(1, 1)`` the bottom-right corner of the
bottom-right pixel (``grid_sample`` with ``align_corners=False``).
"""

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "point_sample",
    "get_uncertain_point_coords_with_randomness",
    "calculate_uncertainty",
    "select_uncertain_point_coords",
    "select_uncertain_grid_points",
    "topk_indices_unordered",
]


def point_sample(input: Tensor, point_coords: Tensor, **kwargs) -> Tensor:
    """Bilinear sample of ``input`` at normalized points.

    input: [N, C, H, W]; point_coords: [N, P, 2] (or [N, Hg, Wg, 2]) in [0, 1]^2.
    Returns [N, C, P] (or [N, C, Hg, Wg]) = ``grid_sample(input, 2*coords - 1)``,
    ``align_corners=False`` unless given in ``kwargs``; mixed dtypes are promoted.
    """
    kwargs.setdefault("align_corners", False)
    if input.dtype != point_coords.dtype:  # e.g. fp16 logits with fp32 coords outside autocast
        dtype = torch.promote_types(input.dtype, point_coords.dtype)
        input, point_coords = input.to(dtype), point_coords.to(dtype)
    add_dim = point_coords.dim() == 3
    if add_dim:
        point_coords = point_coords.unsqueeze(2)
    grid = (point_coords * 2.0).sub_(1.0)  # == 2*coords - 1, one temporary instead of two
    output = F.grid_sample(input, grid, **kwargs)
    if add_dim:
        output = output.squeeze(3)
    return output


def topk_indices_unordered(values: Tensor, k: int) -> Tensor:
    """Indices [N, k] of the k largest entries of each row of ``values`` [N, S], in no
    particular order: the set ``torch.topk(values, k, dim=1, sorted=False)`` selects (NaN
    counts as the largest value, as in topk; ties at the k-th value may be broken differently).

    On the CPU this is numpy's introselect (``argpartition``), 5-6x faster than topk's
    selection at k = S/4, S = 37632 (docs/benchmarks.md); elsewhere it is topk.
    """
    N, S = values.shape
    if k <= 0:
        return torch.zeros(N, 0, dtype=torch.int64, device=values.device)
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64) or k >= S:
        return torch.topk(values, k, dim=1, sorted=False)[1]
    # ascending partition around position S - k: the k entries from there on are the largest,
    # and numpy orders NaN after every number, so NaN is taken first, as topk takes it
    idx = np.argpartition(values.detach().numpy(), S - k, axis=1)[:, S - k :]
    return torch.from_numpy(idx)


def calculate_uncertainty(logits: Tensor) -> Tensor:
    """Uncertainty of binary mask logits: ``-|logit|`` (highest at the decision boundary).

    logits: [N, 1, ...] class-agnostic logits. Returns the same shape.
    """
    assert logits.shape[1] == 1, f"calculate_uncertainty expects one channel, got shape {tuple(logits.shape)}"
    return torch.abs(logits).neg_()  # a new tensor: the input is never modified


def select_uncertain_point_coords(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    oversampled_coords: Tensor,
    num_uncertain_points: int,
    random_coords: Optional[Tensor] = None,
    *,
    ordered: bool = True,
) -> Tensor:
    """The deterministic half of :func:`get_uncertain_point_coords_with_randomness`.

    coarse_logits: [N, 1, H, W]; oversampled_coords: [N, S, 2] candidate points;
    random_coords: [N, R, 2] or None. Keeps, per row, the ``num_uncertain_points``
    candidates whose *sampled* logits score highest under ``uncertainty_func``
    (``topk`` order), then appends ``random_coords``. Returns [N, num_uncertain + R, 2].
    Splitting the draws from the selection lets a batched caller draw the random
    numbers in exactly the order a per-layer loop would and select in one call.

    ``ordered=False`` keeps the same set of candidates in an unspecified order
    (:func:`topk_indices_unordered`: no sort of the kept candidates, which is most of
    topk's cost at k = S/4, and a faster selection on the CPU). A loss that averages over
    the points is unchanged up to float summation order.
    """
    num_boxes, num_sampled = oversampled_coords.shape[:2]
    point_logits = point_sample(coarse_logits, oversampled_coords, align_corners=False)
    point_uncertainties = uncertainty_func(point_logits)
    if ordered:
        idx = torch.topk(point_uncertainties[:, 0, :], k=num_uncertain_points, dim=1)[1]
    else:
        idx = topk_indices_unordered(point_uncertainties[:, 0, :], num_uncertain_points)
    coords = torch.gather(oversampled_coords, 1, idx.unsqueeze(-1).expand(num_boxes, num_uncertain_points, 2))
    if random_coords is not None and random_coords.shape[1] > 0:
        coords = torch.cat([coords, random_coords.to(coords.dtype)], dim=1)
    return coords


def select_uncertain_grid_points(
    coarse_logits: Tensor,
    oversampled_coords: Sequence[Tensor],
    num_uncertain_points: int,
    random_coords: Sequence[Optional[Tensor]],
    uncertainty_func: Callable[[Tensor], Tensor] = calculate_uncertainty,
) -> Tensor:
    """:func:`select_uncertain_point_coords` (``ordered=False``) for consecutive groups of
    rows, returning grid coordinates.

    coarse_logits: [N, 1, H, W]; oversampled_coords[i]: [n_i, S, 2] and random_coords[i]:
    [n_i, R, 2] or None, points in [0, 1]^2 of the next n_i rows (sum n_i = N). Both are
    turned IN PLACE into grid coordinates ``2 * xy - 1`` (the exact values
    :func:`point_sample` feeds ``grid_sample``). Returns [N, num_uncertain + R, 2] grid
    coordinates (use ``F.grid_sample(x, out.unsqueeze(2), align_corners=False)``): per row
    the same candidates as :func:`select_uncertain_point_coords`, in topk's unsorted order,
    then the random points. Group by group, so no temporary is larger than one group's
    (a [N, S] float tensor above glibc's mmap threshold is page-faulted in on every call).
    """
    N = coarse_logits.shape[0]
    k = int(num_uncertain_points)
    R = random_coords[0].shape[1] if len(random_coords) and random_coords[0] is not None else 0
    out = coarse_logits.new_empty(N, k + R, 2)
    minus_one = torch.full((), -1.0, dtype=out.dtype, device=out.device)
    lo = 0
    for over, rand in zip(oversampled_coords, random_coords):
        n, S = over.shape[:2]
        # -1 + 2 * xy in one pass: 2 * xy is exact, so this is point_sample's (coords * 2.0).sub_(1.0)
        grid = torch.add(minus_one, over, alpha=2.0, out=over)
        logits = F.grid_sample(coarse_logits[lo : lo + n], grid.unsqueeze(2), align_corners=False)  # [n, 1, S, 1]
        idx = topk_indices_unordered(uncertainty_func(logits.view(n, 1, S))[:, 0], k)
        _gather_points(grid, idx, out[lo : lo + n, :k])
        if R:
            torch.add(minus_one, rand, alpha=2.0, out=rand)
            out[lo : lo + n, k:] = rand
        lo += n
    if lo != N:
        raise ValueError(f"select_uncertain_grid_points: the point groups cover {lo} rows, coarse_logits has {N}")
    return out


def _gather_points(points: Tensor, idx: Tensor, out: Tensor) -> None:
    """``out[i, j] = points[i, idx[i, j]]``: points [n, S, 2], idx [n, k], out [n, k, 2] (a view
    is fine). A float32 (x, y) pair is gathered as one 8-byte word (2.5x faster than gathering
    the pairs' halves through an expanded [n, k, 2] index)."""
    if points.dtype == torch.float32 and out.dtype == torch.float32 and points.is_contiguous() and out.stride(-1) == 1:
        torch.gather(points.view(torch.int64)[..., 0], 1, idx, out=out.view(torch.int64)[..., 0])
    else:
        out.copy_(torch.gather(points, 1, idx.unsqueeze(-1).expand(*idx.shape, 2)))


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor] = calculate_uncertainty,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> Tensor:
    """Importance-sample points where the mask logits are most uncertain, plus random ones.

    coarse_logits: [N, 1, H, W] logits. Draws ``S = int(num_points*oversample_ratio)``
    uniform points ``torch.rand(N, S, 2)``, scores their sampled logits with
    ``uncertainty_func``, keeps the ``int(importance_sample_ratio*num_points)`` most
    uncertain, then appends ``torch.rand(N, num_points - kept, 2)`` fresh uniform points.
    Returns [N, num_points, 2] in [0, 1]^2 (no gradient is needed through it).
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_boxes = coarse_logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    device = coarse_logits.device
    over = torch.rand(num_boxes, num_sampled, 2, device=device)
    rand = torch.rand(num_boxes, num_random, 2, device=device) if num_random > 0 else None
    return select_uncertain_point_coords(coarse_logits, uncertainty_func, over, num_uncertain, rand)
