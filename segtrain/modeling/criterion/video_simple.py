"""A simple per-frame video mask loss (BCE + dice + soft IoU + temporal consistency)
for models that predict one mask per object and frame, without multistep outputs."""

from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.utils.errors import ConfigError

from .build import CORE_LOSS_KEY, CRITERION_REGISTRY

__all__ = ["VideoSimpleCriterion"]

_COMPUTED = ("loss_mask", "loss_dice", "loss_iou", "loss_temporal")


@CRITERION_REGISTRY.register()
class VideoSimpleCriterion(nn.Module):
    """BCE, dice, soft-IoU and temporal-consistency losses on ``[B, T, N, H, W]`` mask logits.

    weight_dict: weights of ``loss_mask`` (BCE), ``loss_dice``, ``loss_iou``, ``loss_temporal``
        (copied; a key it does not compute is an error). Without it the keyword
        weights are used: ``bce_weight`` 1.0, ``dice_weight`` 1.0, ``iou_weight`` 0.5,
        ``temporal_weight`` 0.1. smooth: added to numerators and denominators.

    Per object and frame, with ``p = sigmoid(x)`` and t the target, over the H*W pixels:
    ``bce = mean BCE(x, t)``, ``dice = 1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)``,
    ``iou = 1 - (sum(p t) + s) / (sum(p) + sum(t) - sum(p t) + s)``; per object and pair of
    consecutive frames ``temporal = mean((p_{t+1} - p_t) - (t_{t+1} - t_t))^2``. Each loss is
    the mean over the valid entries (``valid [B, T, N]``; a pair is valid when both frames
    are), 0 when there are none. ``core_loss = sum(weight_dict[k] * loss_k)``.
    """

    target_format = "video"
    required_output_keys = ("pred_masks",)

    @configurable
    def __init__(
        self,
        weight_dict: Optional[Mapping[str, float]] = None,
        *,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        iou_weight: float = 0.5,
        temporal_weight: float = 0.1,
        smooth: float = 1e-6,
    ):
        super().__init__()
        if weight_dict is None:
            weight_dict = {
                "loss_mask": bce_weight,
                "loss_dice": dice_weight,
                "loss_iou": iou_weight,
                "loss_temporal": temporal_weight,
            }
        weights = {str(k): float(v) for k, v in dict(weight_dict).items()}
        for key in weights:
            if key not in _COMPUTED:
                raise ConfigError(
                    f"VideoSimpleCriterion: weight_dict key {key!r} is not a loss it computes; "
                    f"computed keys: {', '.join(_COMPUTED)}"
                )
        self.weight_dict = weights
        self.smooth = float(smooth)

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        c = cfg.MODEL.CRITERION.VIDEO_SIMPLE
        return {"weight_dict": dict(c.WEIGHT_DICT), "smooth": c.SMOOTH}

    def extra_repr(self) -> str:
        return f"weight_dict={self.weight_dict}, smooth={self.smooth}"

    @staticmethod
    def _unpack(outputs: Any, targets: Any, valid_masks: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        pred = outputs["pred_masks"] if isinstance(outputs, Mapping) else outputs
        if isinstance(targets, Mapping):
            valid_masks = targets.get("valid", valid_masks) if valid_masks is None else valid_masks
            targets = targets["masks"]
        name = "VideoSimpleCriterion"
        if not torch.is_tensor(pred) or pred.dim() != 5:
            raise ValueError(
                f"{name}: pred_masks must be [B, T, N, H, W] logits, got "
                f"{tuple(pred.shape) if torch.is_tensor(pred) else type(pred).__name__}"
            )
        if tuple(targets.shape) != tuple(pred.shape):
            raise ValueError(f"{name}: targets {tuple(targets.shape)} do not match pred_masks {tuple(pred.shape)}")
        if valid_masks is None:
            valid_masks = torch.ones(pred.shape[:3], dtype=torch.bool, device=pred.device)
        if tuple(valid_masks.shape) != tuple(pred.shape[:3]):
            raise ValueError(
                f"{name}: valid_masks {tuple(valid_masks.shape)} must be [B, T, N] = {tuple(pred.shape[:3])}"
            )
        return pred, targets.to(torch.promote_types(pred.dtype, torch.float32)), valid_masks

    @staticmethod
    def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
        v = valid.to(values.dtype)
        return (values * v).sum() / v.sum().clamp(min=1.0)

    def forward(self, outputs: Any, targets: Any, valid_masks: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """outputs: ``{"pred_masks": [B, T, N, H, W]}`` logits (or the tensor itself);
        targets: [B, T, N, H, W] in [0, 1] (or ``{"masks": ..., "valid": [B, T, N]}``);
        valid_masks: bool [B, T, N] (default: all valid). Returns ``loss_mask``, ``loss_dice``,
        ``loss_iou``, ``loss_temporal`` and ``core_loss``."""
        x, t, valid = self._unpack(outputs, targets, valid_masks)
        s = self.smooth
        x32 = x.to(t.dtype)
        p = x32.sigmoid()
        bce = F.binary_cross_entropy_with_logits(x32, t, reduction="none").flatten(3).mean(-1)  # [B, T, N]
        inter = (p * t).flatten(3).sum(-1)
        psum, tsum = p.flatten(3).sum(-1), t.flatten(3).sum(-1)
        dice = 1 - (2 * inter + s) / (psum + tsum + s)
        iou = 1 - (inter + s) / (psum + tsum - inter + s)
        losses = {
            "loss_mask": self._masked_mean(bce, valid),
            "loss_dice": self._masked_mean(dice, valid),
            "loss_iou": self._masked_mean(iou, valid),
        }
        if x.shape[1] > 1:
            dp = p[:, 1:] - p[:, :-1]
            dt = t[:, 1:] - t[:, :-1]
            temporal = (dp - dt).pow(2).flatten(3).mean(-1)  # [B, T-1, N]
            losses["loss_temporal"] = self._masked_mean(temporal, valid[:, 1:] & valid[:, :-1])
        else:
            losses["loss_temporal"] = p.sum() * 0.0
        core = p.new_zeros(())
        for key, w in self.weight_dict.items():
            if w != 0:
                core = core + w * losses[key]
        losses[CORE_LOSS_KEY] = core
        return losses
