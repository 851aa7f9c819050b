"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

``ms_deform_attn_core`` is the fast path used by ``MSDeformAttn``. It never materialises
the sampled values: bilinear interpolation with zero padding is written as a sparse
weighted sum over the 4 neighbouring pixels of every sampling point, and the attention
weight of the point is folded into the 4 bilinear weights. The whole reduction is then
one ``F.embedding_bag(mode="sum", per_sample_weights=...)`` call: each (batch, query,
head) is a bag of L * P * 4 (pixel row, weight) pairs over the value rows, laid out so
that neither ``value`` nor the output needs a transpose. The backward is written by hand:
an unsorted sparse COO product for ``value``, the needed dot products only
(``sampled_addmm``) for the per-neighbour weights, and the chain rule through the
separable bilinear factors to the sampling locations and attention weights.
The value gradient is a scatter of the R*K weighted rows: a COO ``sparse.mm`` sorts and adds
them on one thread, so :func:`value_grad` sorts the entries itself (parallel int16 or int32
sort) and multiplies a CSR matrix (MKL, all threads); faster at 1 thread too. Measured figures vs the
official pure-PyTorch algorithm (``ms_deform_attn_core_pytorch``: one ``grid_sample`` per level, stack,
weighted sum; ``tests/reference/ms_deform_attn.py``) at 1 and 2 threads: ``tools/benchmark.py msda``
and docs/benchmarks.md. It never allocates the [N*M, D, Lq, L*P] sampled tensor of that algorithm.

Shapes (official names): value [N, S, M, D] with S = sum_l H_l * W_l (levels
flattened row-major and concatenated); value_spatial_shapes [L, 2] as (H_l, W_l);
sampling_locations [N, Lq, M, L, P, 2] as (x, y) in [0, 1] (0 = left/top edge, 1 =
right/bottom edge; outside = zero padding); attention_weights [N, Lq, M, L, P].
Output [N, Lq, M * D].
"""

import logging
import math
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from segtrain.layers.wrappers import Linear
from segtrain.utils.errors import ConfigError

__all__ = ["MSDeformAttn", "ms_deform_attn_core", "value_grad"]

logger = logging.getLogger(__name__)

SpatialShapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


def _shapes_list(value_spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    if isinstance(value_spatial_shapes, torch.Tensor):
        return [(int(h), int(w)) for h, w in value_spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in value_spatial_shapes]


def _bilinear_terms(value_shape, shapes: List[Tuple[int, int]], loc: torch.Tensor, device):
    """Neighbour rows and separable bilinear factors of every sampling point.

    loc [N, Lq, M, L, P, 2] (float32/64, no grad needed). Returns
    rows [N, Lq, M, L, P, 2, 2] int64 (neighbour (y0|y1, x0|x1) as a row of
    value.reshape(N * S * M, D)), wx / wy [N, Lq, M, L, P, 2] bilinear factors of (x0, x1) /
    (y0, y1) with out-of-level neighbours zeroed, vx / vy the same validity masks as 0/1 floats,
    and the level sizes W_l / H_l as [L, 1] float tensors.
    """
    N, S, M, _ = value_shape
    L = len(shapes)
    hw = torch.tensor(shapes).to(device, non_blocking=True)  # [L, 2] (H, W) int64; no sync on CUDA
    starts = (torch.cumsum(hw[:, 0] * hw[:, 1], 0) - hw[:, 0] * hw[:, 1]).view(L, 1)
    H_l = hw[:, 0].view(L, 1)  # [L, 1] broadcasts against [N, Lq, M, L, P]
    W_l = hw[:, 1].view(L, 1)
    # Pixel coordinates with align_corners=False: x = loc * W - 0.5 (pixel centres at i + 0.5).
    x = loc[..., 0] * W_l.to(loc.dtype) - 0.5
    y = loc[..., 1] * H_l.to(loc.dtype) - 0.5
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.long()
    y0 = y0f.long()
    # Zero padding: a neighbour outside its level contributes nothing (factor 0).
    vx = torch.stack(((x0 >= 0) & (x0 < W_l), (x0 >= -1) & (x0 < W_l - 1)), -1).to(loc.dtype)
    vy = torch.stack(((y0 >= 0) & (y0 < H_l), (y0 >= -1) & (y0 < H_l - 1)), -1).to(loc.dtype)
    wx = torch.stack((1 - fx, fx), -1).mul_(vx)
    wy = torch.stack((1 - fy, fy), -1).mul_(vy)
    # Row of (n, s, m) in value.reshape(N * S * M, D) is (n * S + s) * M + m with
    # s = start_l + y * W_l + x: value's own memory order, so value is never transposed.
    n_idx = torch.arange(N, device=device).view(N, 1, 1, 1, 1)
    m_idx = torch.arange(M, device=device).view(1, 1, M, 1, 1)
    base = (n_idx * S + starts + y0 * W_l + x0) * M + m_idx  # [N, Lq, M, L, P]
    step = torch.stack((torch.zeros_like(W_l), torch.ones_like(W_l), W_l, W_l + 1), -1).mul_(M)  # [L, 1, 4]
    rows = (base.unsqueeze(-1) + step).view(*base.shape, 2, 2)
    # Out-of-level neighbours have weight 0; any in-range row will do for them.
    rows.clamp_(0, N * S * M - 1)
    return rows, wx, wy, vx, vy, W_l.to(loc.dtype), H_l.to(loc.dtype)


#: CPU value-gradient algorithm: "auto" (``"sorted"``), ``"coo"`` (unsorted COO
#: ``sparse.mm``: it coalesces -- sorts -- the entries
#: and adds them on one thread) or ``"sorted"`` (the entries sorted by value row with a
#: parallel int16 or int32 sort, then a CSR x dense product, which MKL runs on all threads).
#: Measured (docs/benchmarks.md): at 2 threads "sorted" is 1.6-1.8x faster than "coo", at
#: 1 thread 1.2-1.6x (CPU time; int16 keys).
VALUE_GRAD_PATH = "auto"
_VALUE_GRAD_PATHS = ("auto", "coo", "sorted")


def _value_grad_coo(flat_rows: torch.Tensor, weights: torch.Tensor, g: torch.Tensor, K: int, T: int) -> torch.Tensor:
    bags = torch.arange(g.shape[0], device=g.device).repeat_interleave(K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse-tensor beta notices: expected
        at = torch.sparse_coo_tensor(torch.stack((flat_rows, bags)), weights, (T, g.shape[0]), check_invariants=False)
    return torch.sparse.mm(at, g)


def _value_grad_sorted(flat_rows: torch.Tensor, weights: torch.Tensor, g: torch.Tensor, K: int, T: int) -> torch.Tensor:
    # the narrowest integer keys that hold every row: the sort (the dominant cost) is parallel,
    # and int16 keys sort 2.4x faster than int32 at 2 threads (docs/benchmarks.md)
    key_dtype = torch.int16 if T <= torch.iinfo(torch.int16).max else torch.int32
    sorted_rows, perm = torch.sort(flat_rows.to(key_dtype))
    crow = torch.zeros(T + 1, dtype=torch.int32, device=g.device)
    torch.cumsum(torch.bincount(sorted_rows, minlength=T), 0, out=crow[1:])
    bags = torch.div(perm, K, rounding_mode="floor").to(torch.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        at = torch.sparse_csr_tensor(crow, bags, weights[perm], size=(T, g.shape[0]), check_invariants=False)
    return at @ g


def value_grad(
    flat_rows: torch.Tensor, weights: torch.Tensor, g: torch.Tensor, K: int, T: int, path: Optional[str] = None
) -> torch.Tensor:
    """Gradient of ``value.reshape(T, D)`` for the bag sums of ``_MSDeformAttnFunction``.

    flat_rows [R*K] int64 value rows, weights [R*K], g [R, D] output gradient of each bag.
    Returns [T, D] = sum over (bag r, neighbour k) of ``weights[r*K+k] * g[r]`` into row
    ``flat_rows[r*K+k]``. ``path``: see ``VALUE_GRAD_PATH`` (the default); every path gives
    the same values up to float summation order. Off CPU always the COO product.
    """
    path = path or VALUE_GRAD_PATH
    if path not in _VALUE_GRAD_PATHS:
        raise ValueError(f"value_grad: unknown path {path!r}; valid: {', '.join(_VALUE_GRAD_PATHS)}")
    if path == "auto":
        path = "sorted"
    if path == "sorted" and g.device.type == "cpu" and max(T, flat_rows.numel()) < 2**31 - 1:
        return _value_grad_sorted(flat_rows, weights, g, K, T)
    return _value_grad_coo(flat_rows, weights, g, K, T)


class _MSDeformAttnFunction(torch.autograd.Function):
    """Fast multi-scale deformable attention with an analytic backward (see module doc).

    The sampling is a sparse [R, T] x dense [T, D] product (R = N*Lq*M bags of K = L*P*4
    weighted rows, T = N*S*M value rows). Forward: one ``embedding_bag``. Backward: the
    transpose product for ``value`` (:func:`value_grad`), the R*K dot products <grad_out[r], value[row]> for the weights
    (``sampled_addmm`` on CPU), then the chain rule through the separable bilinear weights
    by hand -- cheaper than autograd's graph of [N, Lq, M, L, P, 2, 2] temporaries and than
    ``embedding_bag``'s own backward, which gathers a [R*K, D] copy and sorts all R*K indices.
    """

    @staticmethod
    def forward(ctx, value, shapes, sampling_locations, attention_weights, value_grad_path=None):
        N, S, M, D = value.shape
        _, Lq, _, L, P, _ = sampling_locations.shape
        ctype = torch.promote_types(sampling_locations.dtype, torch.float32)
        loc = sampling_locations.detach().to(ctype)
        attn = attention_weights.detach().to(ctype)
        rows, wx, wy, vx, vy, W_l, H_l = _bilinear_terms(value.shape, shapes, loc, value.device)
        wya = wy * attn.unsqueeze(-1)  # attention folded into the y factor
        weights = wya.unsqueeze(-1) * wx.unsqueeze(-2)  # [N, Lq, M, L, P, 2, 2]
        R, K = N * Lq * M, L * P * 4
        table = value.reshape(N * S * M, D)
        out = F.embedding_bag(rows.view(R, K), table, per_sample_weights=weights.view(R, K).to(value.dtype), mode="sum")
        ctx.save_for_backward(value, rows, weights, wx, wy, vx, vy, attn, W_l, H_l)
        ctx.value_dtype = value.dtype
        ctx.loc_dtype = sampling_locations.dtype
        ctx.attn_dtype = attention_weights.dtype
        ctx.value_grad_path = value_grad_path
        return out.view(N, Lq, M * D)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        value, rows, weights, wx, wy, vx, vy, attn, W_l, H_l = ctx.saved_tensors
        N, S, M, D = value.shape
        R = rows.shape[0] * rows.shape[1] * rows.shape[2]  # bags: N * Lq * M
        K = rows[0, 0, 0].numel()  # neighbours per bag: L * P * 4
        T = N * S * M
        # Low-precision inputs: do the reductions in float32.
        ctype = weights.dtype
        table = value.reshape(T, D).to(ctype)
        g = grad_out.reshape(R, D).to(ctype).contiguous()
        flat_rows = rows.view(-1)
        grad_value = grad_loc = grad_attn = None
        if ctx.needs_input_grad[0]:
            grad_value = value_grad(flat_rows, weights.reshape(-1), g, K, T, ctx.value_grad_path)
            grad_value = grad_value.view(N, S, M, D).to(ctx.value_dtype)
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            # gw[r, k] = <grad_out[r], value[row_k]>: only R*K dot products are needed.
            if g.device.type == "cpu":
                crow = torch.arange(0, R * K + 1, K, device=g.device)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pattern = torch.sparse_csr_tensor(
                        crow, flat_rows, weights.reshape(-1), size=(R, T), check_invariants=False
                    )
                    gw = torch.sparse.sampled_addmm(pattern, g, table.t(), beta=0.0).values()
            else:
                gw = torch.bmm(table[rows.view(R, K)], g.unsqueeze(-1))
            gw = gw.view(weights.shape)  # [N, Lq, M, L, P, 2 (y), 2 (x)]
            # weights = attn * wy[y] * wx[x]; the size-2 sums are written out (a reduction
            # over a last dim of 2 is several times slower than two slices and an add)
            wx0, wx1 = wx[..., 0:1], wx[..., 1:2]  # [..., 1]: broadcast over y
            t_y = gw[..., 0] * wx0 + gw[..., 1] * wx1  # sum_x gw * wx -> [..., 2 (y)]
            if ctx.needs_input_grad[3]:
                grad_attn = (t_y[..., 0] * wy[..., 0] + t_y[..., 1] * wy[..., 1]).to(ctx.attn_dtype)
            if ctx.needs_input_grad[2]:
                s_x = gw[..., 0, :] * wy[..., 0:1] + gw[..., 1, :] * wy[..., 1:2]  # sum_y gw * wy -> [..., 2 (x)]
                # d wx / d fx = (-vx0, +vx1), d fx / d loc_x = W_l (likewise for y)
                gfx = (s_x[..., 1] * vx[..., 1] - s_x[..., 0] * vx[..., 0]) * attn * W_l
                gfy = (t_y[..., 1] * vy[..., 1] - t_y[..., 0] * vy[..., 0]) * attn * H_l
                grad_loc = torch.stack((gfx, gfy), -1).to(ctx.loc_dtype)
        return grad_value, None, grad_loc, grad_attn, None


def ms_deform_attn_core(
    value: torch.Tensor,
    value_spatial_shapes: SpatialShapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    *,
    value_grad_path: Optional[str] = None,
) -> torch.Tensor:
    """Multi-scale deformable attention, equal to the official algorithm to float round-off.

    value [N, S, M, D]; value_spatial_shapes [L, 2] (H_l, W_l); sampling_locations
    [N, Lq, M, L, P, 2] (x, y) in [0, 1]; attention_weights [N, Lq, M, L, P].
    Returns [N, Lq, M * D] in value's dtype. Differentiable w.r.t. value, locations and
    weights (first order only). ``value_grad_path``: the value gradient's algorithm
    (:func:`value_grad`; None: ``VALUE_GRAD_PATH``).
    """
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    shapes = _shapes_list(value_spatial_shapes)
    if len(shapes) != L:
        raise ValueError(f"ms_deform_attn: {len(shapes)} spatial shapes for {L} levels in sampling_locations")
    if sum(h * w for h, w in shapes) != S:
        raise ValueError(
            f"ms_deform_attn: value has {S} positions but spatial shapes {shapes} sum to "
            f"{sum(h * w for h, w in shapes)}"
        )
    return _MSDeformAttnFunction.apply(value, shapes, sampling_locations, attention_weights, value_grad_path)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (official parameter names and init).

    Parameters: ``sampling_offsets`` Linear(d_model, n_heads*n_levels*n_points*2),
    ``attention_weights`` Linear(d_model, n_heads*n_levels*n_points), ``value_proj`` and
    ``output_proj`` Linear(d_model, d_model).

    forward(query [N, Lq, C], reference_points [N, Lq, L, 2] in [0, 1] (or [N, Lq, L, 4]
    boxes cx, cy, w, h), input_flatten [N, S, C], input_spatial_shapes [L, 2] long (H, W),
    input_level_start_index [L] long, input_padding_mask [N, S] bool True=padding or None)
    -> [N, Lq, C], sampled with :func:`ms_deform_attn_core`.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ConfigError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = Linear(d_model, d_model)
        self.output_proj = Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Official init: offsets start on a ring of n_heads directions (head h points at
        angle 2*pi*h/n_heads, scaled so the larger coordinate is 1), point p at distance
        p + 1; uniform attention; Xavier projections."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = (grid_init / grid_init.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid_init = grid_init.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid_init[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid_init.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def sampling_inputs(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections before the sampling: ``value`` [N, S, M, C / M] (zero at padding),
        ``sampling_locations`` [N, Lq, M, L, P, 2] in [0, 1] (x, y) and ``attention_weights``
        [N, Lq, M, L, P] (softmax over L x P)."""
        N, Lq, _ = query.shape
        _, S, _ = input_flatten.shape
        M, L, P = self.n_heads, self.n_levels, self.n_points
        shapes = input_spatial_shapes
        if not isinstance(shapes, torch.Tensor):
            shapes = torch.as_tensor(shapes, dtype=torch.long, device=query.device)

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, self.d_model // M)
        sampling_offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        attention_weights = F.softmax(self.attention_weights(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: normalise by (W_l, H_l).
            offset_normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], -1).to(sampling_offsets.dtype)
            sampling_locations = (
                reference_points[:, :, None, :, None, :]
                + sampling_offsets / offset_normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"MSDeformAttn: last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}"
            )
        return value, sampling_locations, attention_weights

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: Optional[torch.Tensor] = None,
        input_padding_mask: Optional[torch.Tensor] = None,
        spatial_shapes_list: Optional[Sequence[Tuple[int, int]]] = None,
    ) -> torch.Tensor:
        """``spatial_shapes_list``: the same (H_l, W_l) as Python ints, when the caller has
        them; the sampling then needs no device -> host copy of ``input_spatial_shapes``
        (a synchronisation on CUDA)."""
        value, sampling_locations, attention_weights = self.sampling_inputs(
            query, reference_points, input_flatten, input_spatial_shapes, input_padding_mask
        )
        core_shapes = spatial_shapes_list if spatial_shapes_list is not None else input_spatial_shapes
        output = ms_deform_attn_core(value, core_shapes, sampling_locations, attention_weights)
        return self.output_proj(output)
