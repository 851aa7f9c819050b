"""SAM 3's ``Masks`` loss piece: focal + dice mask losses over matched pairs with a valid GT mask,
point-sampled or at full resolution (docs/losses.md#masks).

Outputs: ``pred_masks [B, Q, h, w]`` logits; targets: ``masks [T, H, W]`` or None, ``is_valid_mask
[T]``; ``indices = (batch_idx [M], src_idx [M], tgt_idx [M] or None)`` as in ``sam3_loss_fns``.
"""

import logging
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from segtrain.config import configurable
from segtrain.layers.losses import dice_loss, sigmoid_focal_loss, upsampled_focal_dice_loss
from segtrain.layers.point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from segtrain.utils.errors import ConfigError

from .sam3_loss_fns import SAM3_LOSS_REGISTRY, LossWithWeights, Number, _at_least_f32, _check_indices, _select

__all__ = ["Masks"]

logger = logging.getLogger(__name__)


@SAM3_LOSS_REGISTRY.register()
class Masks(LossWithWeights):
    """Focal + dice mask losses over matched pairs whose GT mask is valid.

    Matched predictions ``pred_masks[b, q]`` [M, h, w] and their GT rows ``masks[tgt]``
    [M, H, W], rows with ``is_valid_mask`` False dropped (K kept). With ``num_sample_points``:
    ``P`` points per mask from ``get_uncertain_point_coords_with_randomness`` on the
    predictions (no grad), predictions and GT point-sampled there (no upsampling). Otherwise
    the kept predictions are bilinearly upsampled (``align_corners=False``, skipped when
    already H x W) and all ``P = H*W`` pixels are used, in chunks of masks
    (:func:`~segtrain.layers.losses.upsampled_focal_dice_loss`: less than one [K, H, W]
    upsampled copy alive, forward and backward). Then
    ``loss_mask = sigmoid_focal_loss(x, g, num_boxes, focal_alpha, focal_gamma)`` (mean over P,
    summed over masks, / num_boxes) and ``loss_dice = dice_loss(x, g, num_boxes)``.
    ``masks is None`` gives zero losses.
    """

    computed_keys = ("loss_mask", "loss_dice")
    required_output_keys = ("pred_masks",)
    required_target_keys = ("masks", "is_valid_mask")

    @configurable
    def __init__(
        self,
        weight_dict: Optional[Mapping[str, float]] = None,
        compute_aux: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2,
        num_sample_points: Optional[int] = None,
        oversample_ratio: Optional[float] = None,
        importance_sample_ratio: Optional[float] = None,
    ):
        super().__init__(weight_dict, compute_aux)
        if num_sample_points is not None and (oversample_ratio is None or importance_sample_ratio is None):
            raise ConfigError(
                f"Masks: num_sample_points={num_sample_points} needs oversample_ratio and importance_sample_ratio; "
                f"got {oversample_ratio} and {importance_sample_ratio}"
            )
        if self.compute_aux:
            logger.warning("Masks: compute_aux=True applies the mask loss to every aux output (SAM 3 uses False)")
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.num_sample_points = num_sample_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.CRITERION.SAM3.MASKS
        return {
            "weight_dict": dict(c.WEIGHT_DICT),
            "compute_aux": c.COMPUTE_AUX,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_gamma": c.FOCAL_GAMMA,
            "num_sample_points": int(c.NUM_SAMPLE_POINTS) if c.NUM_SAMPLE_POINTS else None,
            "oversample_ratio": c.OVERSAMPLE_RATIO,
            "importance_sample_ratio": c.IMPORTANCE_SAMPLE_RATIO,
        }

    def _losses(self, src: Tensor, tgt: Tensor, num_boxes: Number) -> Dict[str, Tensor]:
        return {
            "loss_mask": sigmoid_focal_loss(src, tgt, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma),
            "loss_dice": dice_loss(src, tgt, num_boxes),
        }

    def get_loss(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        b, q, t = _check_indices(indices, type(self).__name__)
        pred_masks = outputs["pred_masks"]
        gt_masks = targets.get("masks")
        if gt_masks is None:  # the dataset has no segmentation
            zero = torch.zeros((), device=pred_masks.device)
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        valid = targets.get("is_valid_mask")
        rows = t if t is not None else torch.arange(gt_masks.shape[0], device=b.device)
        if valid is not None:
            keep = _select(valid.to(torch.bool), t)
            keep = keep.to(b.device)
            b, q, rows = b[keep], q[keep], rows[keep]
        src = pred_masks[(b, q)]  # [K, h, w]
        src = _at_least_f32(src)  # half precision upcast for interpolation / grid_sample
        if src.shape[0] == 0:
            zero = src.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        if self.num_sample_points is None and gt_masks.device == src.device:
            # full resolution: the same interpolate + focal + dice, chunked so that less than one
            # [K, H, W] upsampled copy exists at a time (autograd through the plain composition
            # keeps ~9), the matched GT rows gathered chunk by chunk too
            loss_mask, loss_dice = upsampled_focal_dice_loss(
                src, gt_masks, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma, tgt_rows=rows.to(src.device)
            )
            return {"loss_mask": loss_mask, "loss_dice": loss_dice}
        tgt = gt_masks[rows.to(gt_masks.device)].to(device=src.device, dtype=src.dtype)  # [K, H, W]

        if self.num_sample_points is not None:
            src, tgt = src[:, None], tgt[:, None]
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src,
                    calculate_uncertainty,
                    self.num_sample_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )
                tgt_points = point_sample(tgt, coords, align_corners=False).squeeze(1)  # [K, P]
            src_points = point_sample(src, coords, align_corners=False).squeeze(1)  # [K, P]
            return self._losses(src_points, tgt_points, num_boxes)

        loss_mask, loss_dice = upsampled_focal_dice_loss(
            src, tgt, num_boxes, alpha=self.focal_alpha, gamma=self.focal_gamma
        )
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}
