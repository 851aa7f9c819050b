"""The official pure-PyTorch multi-scale deformable attention (Deformable DETR's
``ms_deform_attn_core_pytorch``: one ``grid_sample`` per level, stack, weighted sum) and a
module that runs it, for comparison with ``segtrain.layers.ms_deform_attn``.

Shapes (official names): value [N, S, M, D] with S = sum_l H_l * W_l; value_spatial_shapes
[L, 2] as (H_l, W_l); sampling_locations [N, Lq, M, L, P, 2] as (x, y) in [0, 1];
attention_weights [N, Lq, M, L, P]. Output [N, Lq, M * D].
"""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.layers.ms_deform_attn import MSDeformAttn

__all__ = ["ReferenceMSDeformAttn", "ms_deform_attn_reference"]

SpatialShapes = Union[Tensor, Sequence[Tuple[int, int]]]


def _shapes_list(value_spatial_shapes: SpatialShapes) -> List[Tuple[int, int]]:
    rows = value_spatial_shapes.tolist() if isinstance(value_spatial_shapes, Tensor) else value_spatial_shapes
    return [(int(h), int(w)) for h, w in rows]


def ms_deform_attn_reference(
    value: Tensor, value_spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Multi-scale deformable attention, the official algorithm.

    value [N, S, M, D]; value_spatial_shapes [L, 2] (H_l, W_l); sampling_locations
    [N, Lq, M, L, P, 2] (x, y) in [0, 1] (outside: zero padding); attention_weights
    [N, Lq, M, L, P]. Returns [N, Lq, M * D]; differentiable through autograd.
    """
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    shapes = _shapes_list(value_spatial_shapes)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for lid, (h, w) in enumerate(shapes):
        value_l = value_list[lid].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)  # [N*M, D, h, w]
        grid_l = sampling_grids[:, :, :, lid].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    attn = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * attn).sum(-1).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()


class ReferenceMSDeformAttn(MSDeformAttn):
    """``MSDeformAttn`` with :func:`ms_deform_attn_reference` as its sampling (the projections
    are the production module's). :meth:`sharing` builds one on the very parameters of an
    existing module.

    forward(query [N, Lq, C], reference_points [N, Lq, L, 2] in [0, 1] or [N, Lq, L, 4] boxes
    (cx, cy, w, h), input_flatten [N, S, C], input_spatial_shapes [L, 2] (H, W),
    input_level_start_index [L] (unused), input_padding_mask [N, S] bool True=padding or None)
    -> [N, Lq, C].
    """

    @classmethod
    def sharing(cls, attn: nn.Module) -> "ReferenceMSDeformAttn":
        """A reference module whose four projections are ``attn``'s own (the same Parameter
        objects: an optimizer built on the model keeps training them)."""
        ref = cls(attn.d_model, attn.n_levels, attn.n_heads, attn.n_points)
        for name in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            setattr(ref, name, getattr(attn, name))
        return ref

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes,
        input_level_start_index: Optional[Tensor] = None,
        input_padding_mask: Optional[Tensor] = None,
        spatial_shapes_list: Optional[Sequence[Tuple[int, int]]] = None,
    ) -> Tensor:
        value, sampling_locations, attention_weights = self.sampling_inputs(
            query, reference_points, input_flatten, input_spatial_shapes, input_padding_mask
        )
        core_shapes = spatial_shapes_list if spatial_shapes_list is not None else input_spatial_shapes
        output = ms_deform_attn_reference(value, core_shapes, sampling_locations, attention_weights)
        return self.output_proj(output)
