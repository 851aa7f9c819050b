"""Mask2Former ``HungarianMatcher``: one-to-one matching of queries to GT masks (docs/losses.md).

Per image ``b`` with ``n_b`` GT masks, the cost of (query q, GT j) is::

    C[q, j] = cost_class * (-softmax(pred_logits[b])[q, labels[j]])
            + cost_mask  * mean_P bce(point_logits[q], point_labels[j])      (batch_sigmoid_ce_loss)
            + cost_dice  * dice(point_logits[q], point_labels[j])            (batch_dice_loss)

with ONE set of ``num_points`` uniform points per image shared by all of its
predicted and GT masks (``num_points <= 0``: no sampling; predictions are
bilinearly upsampled to the GT size and every pixel is used, as MaskFormer did).
Costs are computed in float32 with autocast disabled (the assignment must not
change with precision), moved to the CPU once, and solved per image with
``scipy.optimize.linear_sum_assignment``.

Batching. :meth:`HungarianMatcher.match_many` matches a list of predictions
(e.g. Mask2Former's 10 decoder outputs) against the same targets at once:

* shared across predictions: the target packing (labels, float masks, padding) and
  the single device -> CPU copy of every cost matrix;
* NOT shared: each prediction gets its own fresh points per image, drawn exactly
  as the official code draws them (``torch.rand(1, num_points, 2)`` per image, per
  call, predictions in list order), so ``match_many([o0, o1])`` equals
  ``[forward(o0), forward(o1)]`` under the same RNG state;
* batched over images: per prediction, one ``grid_sample`` of all GT masks at their
  image's points, one of all predicted masks (on the CPU one per image, its Q masks as
  one-channel planes sharing the image's expanded grid), and one batched
  matmul per cost term (targets padded to the largest ``n_b`` of the batch); then one
  ``linear_sum_assignment`` per (prediction, image) on the CPU copy (scipy's C solver:
  about 10 us for 100 x 8, a fraction of a percent of the call, see the benchmark).

The assignments equal the official per-image loop's under the same RNG state
(``tests/reference/hungarian.py``, which the tests and the benchmark compare against).
"""

import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.layers.losses import batch_dice_loss, batch_sigmoid_ce_loss
from segtrain.layers.point_sample import point_sample
from segtrain.structures.packed_instances import PackedInstanceTargets, pack_instance_targets
from segtrain.utils.errors import DatasetError, NonFiniteLossError

from .build import MATCHER_REGISTRY

__all__ = ["HungarianMatcher", "PackedInstanceTargets", "pack_instance_targets"]

logger = logging.getLogger(__name__)

Indices = List[Tuple[Tensor, Tensor]]


def _empty_indices() -> Tuple[Tensor, Tensor]:
    return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)


@MATCHER_REGISTRY.register()
class HungarianMatcher(nn.Module):
    """Mask2Former's matcher (no grad). See the module docstring for the cost and batching.

    ``forward(outputs, targets)``: outputs ``{"pred_logits": [B, Q, K+1], "pred_masks":
    [B, Q, h, w]}`` (or a list of such dicts); targets: list of B ``{"labels": [n_b]
    int64, "masks": [n_b, H, W]}``. Returns a list of B ``(query_idx, target_idx)``
    int64 CPU tensors of length ``min(Q, n_b)``, query_idx ascending (or one such list
    per output when given a list). An image without GT gets two empty tensors.
    """

    #: points per chunk of the mask costs on CPU with one torch thread (:meth:`_point_mask_costs`);
    #: 0: one chunk
    POINT_CHUNK: int = 2048

    @configurable
    def __init__(self, cost_class: float = 1, cost_mask: float = 1, cost_dice: float = 1, num_points: int = 0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all costs are 0 (cost_class, cost_mask, cost_dice); set at least one")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = int(num_points)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        node = cfg.MODEL.MATCHER.HUNGARIAN
        return {
            "cost_class": node.COST_CLASS,
            "cost_mask": node.COST_MASK,
            "cost_dice": node.COST_DICE,
            "num_points": node.NUM_POINTS,
        }

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )

    # ------------------------------------------------------------------ points
    def draw_point_coords(self, batch_size: int, device=None) -> Optional[Tensor]:
        """The points of one matching call: [B, num_points, 2] uniform in [0, 1]^2, drawn
        as ``torch.rand(1, num_points, 2)`` once per image in image order (the official
        RNG consumption); None when ``num_points <= 0``."""
        if self.num_points <= 0:
            return None
        if batch_size == 0:
            return torch.zeros(0, self.num_points, 2, device=device)
        return torch.cat([torch.rand(1, self.num_points, 2, device=device) for _ in range(batch_size)])

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def forward(self, outputs, targets, point_coords=None):
        """Match one output dict (-> list of B index pairs) or a list of them (-> list of lists).
        point_coords: [B, P, 2] (or a list of them for a list of outputs); None draws fresh ones."""
        if isinstance(outputs, (list, tuple)):
            return self.match_many(outputs, targets, point_coords=point_coords)
        return self.match_many([outputs], targets, point_coords=None if point_coords is None else [point_coords])[0]

    @torch.no_grad()
    def match_many(
        self,
        outputs_list: Sequence[Dict[str, Tensor]],
        targets: Union[Sequence[Dict[str, Tensor]], PackedInstanceTargets],
        point_coords: Optional[Sequence[Optional[Tensor]]] = None,
        layer_names: Optional[Sequence[str]] = None,
    ) -> List[Indices]:
        """Match every output of ``outputs_list`` against the same targets (module docstring).

        point_coords: per output, [B, num_points, 2] or None (drawn here, in list order).
        layer_names: how errors name each output (default ``outputs[i]``).
        Returns one list of B ``(query_idx, target_idx)`` pairs per output.
        """
        if not outputs_list:
            return []
        C, sizes = self.cost_matrices(outputs_list, targets, point_coords, layer_names)
        results = []
        for l in range(len(outputs_list)):
            per_image = []
            for b, n in enumerate(sizes):
                if n == 0:
                    per_image.append(_empty_indices())
                    continue
                i, j = linear_sum_assignment(C[l, b, :, :n])
                per_image.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
            results.append(per_image)
        return results

    @torch.no_grad()
    def cost_matrices(
        self,
        outputs_list: Sequence[Dict[str, Tensor]],
        targets: Union[Sequence[Dict[str, Tensor]], PackedInstanceTargets],
        point_coords: Optional[Sequence[Optional[Tensor]]] = None,
        layer_names: Optional[Sequence[str]] = None,
    ) -> Tuple[np.ndarray, List[int]]:
        """The cost matrices :meth:`match_many` solves (same arguments, same RNG consumption).

        Returns ``(C, sizes)``: C [L, B, Q, max n_b] float32 on the host, where image b's
        problem is ``C[l, b, :, :sizes[b]]`` (the other columns are padding), and sizes the
        n_b of each image. A non-finite cost raises ``NonFiniteLossError`` naming the term,
        the image and the output.
        """
        L = len(outputs_list)
        names = list(layer_names) if layer_names is not None else [f"outputs[{i}]" for i in range(L)]
        B, Q = outputs_list[0]["pred_logits"].shape[:2]
        device = outputs_list[0]["pred_logits"].device
        if point_coords is None:
            point_coords = [self.draw_point_coords(B, device) for _ in range(L)]
        packed = pack_instance_targets(targets, device=device, need_masks=self._needs_masks())
        if len(packed.sizes) != B:
            raise DatasetError(f"HungarianMatcher: {len(packed.sizes)} targets for a batch of {B} predictions")
        if packed.num_masks == 0:
            return np.zeros((L, B, Q, 0), dtype=np.float32), list(packed.sizes)
        maxn = max(packed.sizes)
        dev_type = device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
        # costs in float32 under autocast: the assignment must not change with precision
        with torch.autocast(device_type=dev_type, enabled=False):
            labels_padded = packed.padded(packed.labels)  # [B, maxn]
            gt_by_image = self._gt_by_image(packed)
            costs = []
            for l, out in enumerate(outputs_list):
                tgt_l = self._targets_of(packed, point_coords[l], gt_by_image)
                costs.append(self._cost(out, labels_padded, tgt_l, point_coords[l], packed)[0])
            C = torch.stack(costs).cpu()  # [L, B, Q, maxn]: the one device -> CPU copy
        C_np = C.numpy()
        # a non-finite cost never reaches scipy: check every (output, image) before solving any
        cols = np.arange(maxn)[None, None, None, :] < np.asarray(packed.sizes)[None, :, None, None]
        bad = ~np.isfinite(C_np) & cols
        if bad.any():
            l, b = (int(v) for v in np.argwhere(bad.any(axis=(2, 3)))[0])
            tgt_l = self._targets_of(packed, point_coords[l])
            with torch.autocast(device_type=dev_type, enabled=False):
                self._raise_non_finite(outputs_list[l], labels_padded, tgt_l, point_coords[l], packed, b, names[l])
        return C_np, list(packed.sizes)

    # ------------------------------------------------------------------ internals
    def _needs_masks(self) -> bool:
        return self.cost_mask != 0 or self.cost_dice != 0

    def _gt_by_image(self, packed: PackedInstanceTargets) -> Optional[Tensor]:
        """On the CPU with point costs: the GT masks as [B, maxn, H, W] in channels-last memory
        (the masks of one image are the channels of each pixel; zero masks pad images with
        fewer GT), built once per call and sampled by every output in :meth:`_targets_of`.
        None otherwise."""
        if not self._needs_masks() or self.num_points <= 0 or packed.masks.device.type != "cpu":
            return None
        G, H, W = packed.masks.shape
        out = packed.masks.new_zeros(packed.batch_size, H, W, max(packed.sizes))
        for b, (o, n) in enumerate(zip(packed.offsets, packed.sizes)):
            if n:
                out[b, :, :, :n] = packed.masks[o : o + n].permute(1, 2, 0)
        return out.permute(0, 3, 1, 2)

    def _targets_of(
        self, packed: PackedInstanceTargets, coords: Optional[Tensor], gt_by_image: Optional[Tensor] = None
    ) -> Optional[Tensor]:
        """GT values of one output: [B, maxn, P] at its points (zero for padding), [B, maxn, H*W]
        without points, or None without mask costs. ``gt_by_image`` (from :meth:`_gt_by_image`)
        samples each image's GT masks as the channels of one ``grid_sample`` (2.5x faster on
        the CPU than one plane per GT, whose four corner reads per point are a mask apart);
        the values are the same either way."""
        if not self._needs_masks():
            return None
        if self.num_points <= 0:
            return packed.padded(packed.masks.flatten(1))
        coords = coords.to(packed.masks.device, torch.float32)
        if gt_by_image is not None:
            return point_sample(gt_by_image, coords)  # [B, maxn, P]: an image's GT masks are its channels
        gt_coords = coords[packed.image_index()]  # [G, P, 2]: each GT at its image's points
        return packed.padded(point_sample(packed.masks[:, None], gt_coords).squeeze(1))

    def _cost(
        self,
        out: Dict[str, Tensor],
        labels_padded: Tensor,
        tgt_pts: Optional[Tensor],
        coords: Optional[Tensor],
        packed: PackedInstanceTargets,
    ):
        """[B, Q, maxn] total cost and its three terms (each None when its weight is 0)."""
        logits = out["pred_logits"].float()
        B, Q = logits.shape[:2]
        maxn = labels_padded.shape[1]
        total = logits.new_zeros(B, Q, maxn)
        cost_class = cost_mask = cost_dice = None
        if self.cost_class != 0:
            prob = logits.softmax(-1)
            index = labels_padded[:, None, :].expand(B, Q, maxn)
            if index.device.type != "cpu":
                # an out-of-range label is reported by the caller (SetCriterion) after matching,
                # not by a device-side assert here; valid labels are unchanged
                index = index.clamp(0, logits.shape[-1] - 1)
            cost_class = -torch.gather(prob, 2, index)
            total = total + self.cost_class * cost_class
        if self._needs_masks():
            out_mask = out["pred_masks"].float()  # [B, Q, h, w]
            if self.num_points > 0:
                cost_mask, cost_dice = self._point_mask_costs(out_mask, coords, tgt_pts)
            else:
                out_pts = F.interpolate(
                    out_mask, size=packed.masks.shape[-2:], mode="bilinear", align_corners=False
                ).flatten(2)
                if self.cost_mask != 0:
                    cost_mask = batch_sigmoid_ce_loss(out_pts, tgt_pts)
                if self.cost_dice != 0:
                    cost_dice = batch_dice_loss(out_pts, tgt_pts)
            if cost_mask is not None:
                total = total + self.cost_mask * cost_mask
            if cost_dice is not None:
                total = total + self.cost_dice * cost_dice
        return total, cost_class, cost_mask, cost_dice

    def _point_mask_costs(self, out_mask: Tensor, coords: Tensor, tgt_pts: Tensor):
        """The mask costs at the points: ``batch_sigmoid_ce_loss`` and ``batch_dice_loss`` of
        ``out_mask`` [B, Q, h, w] sampled at its image's ``coords`` [B, P, 2] vs ``tgt_pts``
        [B, n, P]; each [B, Q, n] (None when its weight is 0).

        The same formulas, accumulated over chunks of ``POINT_CHUNK`` points on the CPU with
        one torch thread: each chunk's [B, Q, chunk] softplus and sigmoid stay in the core's
        cache between the elementwise functions, the row sums and the products, instead of
        round trips to memory for [B, Q, P] (docs/benchmarks.md). Sums are split per chunk:
        equal to float round-off. One chunk otherwise (identical to the unchunked formulas).
        """
        want_ce, want_dice = self.cost_mask != 0, self.cost_dice != 0
        B, Q = out_mask.shape[:2]
        P = coords.shape[1]
        on_cpu = out_mask.device.type == "cpu"
        grid = (coords.to(out_mask.device, torch.float32) * 2.0).sub_(1.0).unsqueeze(2)  # as point_sample: [B, P, 1, 2]
        if on_cpu:
            # each image's Q masks as Q one-channel planes sharing the image's points (the grid
            # expanded, not copied): the CPU kernel's one-channel path, 2.7x less CPU time than
            # [B, Q, h, w] as Q channels (channels-last, which also needs a copy of the masks)
            # at Q=100, 128x128, P=12544 (docs/benchmarks.md); the same values
            x_all = torch.stack(
                [
                    F.grid_sample(out_mask[b].unsqueeze(1), grid[b : b + 1].expand(Q, P, 1, 2), align_corners=False)
                    for b in range(B)
                ]
            ).view(B, Q, P)
        # one torch thread only: with an OpenMP team, every op of every chunk is a parallel
        # region, and a region stalls whenever another process holds a core (measured 3-10x
        # slower on a shared 2-core machine); the team also shares the cache
        chunk = self.POINT_CHUNK if on_cpu and self.POINT_CHUNK > 0 and torch.get_num_threads() == 1 else P
        sp_sum = x_t = p_t = p_sum = None
        for lo in range(0, P, chunk):
            if on_cpu:
                x = x_all[:, :, lo : lo + chunk]  # [B, Q, c]
            else:
                x = F.grid_sample(out_mask, grid[:, lo : lo + chunk], align_corners=False).squeeze(3)
            t = tgt_pts[:, :, lo : lo + chunk].transpose(1, 2)  # [B, c, n]
            if want_ce:  # bce(x, t) summed = softplus(x) - x t (batch_sigmoid_ce_loss)
                parts = (F.softplus(x).sum(-1, keepdim=True), x @ t)
                sp_sum, x_t = parts if sp_sum is None else (sp_sum.add_(parts[0]), x_t.add_(parts[1]))
            if want_dice:
                p = x.sigmoid()
                parts = (p @ t, p.sum(-1, keepdim=True))
                p_t, p_sum = parts if p_t is None else (p_t.add_(parts[0]), p_sum.add_(parts[1]))
        cost_mask = (sp_sum - x_t) / P if want_ce else None
        cost_dice = None
        if want_dice:
            denominator = p_sum + tgt_pts.sum(-1).unsqueeze(-2)
            cost_dice = 1 - (2 * p_t + 1) / (denominator + 1)
        return cost_mask, cost_dice

    def _raise_non_finite(self, out, labels_padded, tgt_pts, coords, packed, b: int, name: str):
        n = packed.sizes[b]
        _, cc, cm, cd = self._cost(out, labels_padded, tgt_pts, coords, packed)
        for term, v in (("class", cc), ("mask", cm), ("dice", cd)):
            if v is not None and not torch.isfinite(v[b, :, :n]).all():
                raise self._non_finite_error(term, b, name)
        raise self._non_finite_error("total", b, name)

    def _non_finite_error(self, term: str, b: int, name: str) -> NonFiniteLossError:
        source = {"class": "pred_logits", "mask": "pred_masks", "dice": "pred_masks"}.get(
            term, "pred_logits/pred_masks"
        )
        what = (
            f"{term} cost (cost_{term})"
            if term != "total"
            else "total cost (weighted sum of the class, mask, dice costs)"
        )
        return NonFiniteLossError(
            f"HungarianMatcher: non-finite {what} for image {b} of {name}; "
            f"{source} holds NaN or Inf, scipy's linear_sum_assignment was not called"
        )
