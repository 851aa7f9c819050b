"""SAM 2's multi-step multi-mask loss (``MultiStepMultiMasksAndIous``), docs/losses.md "SAM 2"."""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.layers.binary_mask_losses import BinaryTargets, multimask_focal_dice_iou
from segtrain.layers.losses import dice_loss, iou_loss, mask_ious, sigmoid_focal_loss
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError
from segtrain.utils.loss_trends import register_moving_target

from .build import CORE_LOSS_KEY, CRITERION_REGISTRY

__all__ = ["MultiStepMultiMasksAndIous"]

_MASKS = "multistep_pred_multimasks_high_res"
_IOUS = "multistep_pred_ious"
_OBJ = "multistep_object_score_logits"
_REQUIRED_WEIGHTS = ("loss_mask", "loss_dice", "loss_iou")
_COMPUTED = ("loss_mask", "loss_dice", "loss_iou", "loss_class")
#: logged with the losses: the mean actual IoU that ``loss_iou`` regresses onto. It starts
#: near 0 while the masks are poor and rises as they improve, which is why ``loss_iou``
#: (an error against these targets) can rise while the IoU head learns (docs/sam2.md).
IOU_TARGET_MEAN_KEY = "iou_target_mean"


@CRITERION_REGISTRY.register()
class MultiStepMultiMasksAndIous(nn.Module):
    """Mask, dice, IoU-prediction and object-score losses over frames and prediction steps.

    weight_dict: must hold ``loss_mask``, ``loss_dice``, ``loss_iou``; ``loss_class`` defaults
        to 0 (the argument is copied, never modified).
    focal_alpha, focal_gamma: the mask focal loss. supervise_all_iou: IoU loss averaged over
    all M masks instead of the selected one. iou_use_l1_loss: L1 instead of MSE.
    pred_obj_scores, focal_gamma_obj_score, focal_alpha_obj_score: the object-score loss.

    Per frame and step, with masks ``x [N, M, H, W]``, GT ``g [N, H, W]`` expanded to
    ``[N, M, H, W]`` and ``n = max(N, 1)`` (averaged over processes):
    ``F = sigmoid_focal_loss(x, g, n) [N, M]``, ``D = dice_loss(x, g, n) [N, M]``,
    ``I = iou_loss(x, g, ious, n) [N, M]``. If M > 1, per object ``m* = argmin(w_mask*F + w_dice*D)``,
    keep ``F[m*]``, ``D[m*]`` and ``I[m*]`` (or ``mean_M I`` with ``supervise_all_iou``).
    ``o = any(g > 0)`` per object; with ``pred_obj_scores``,
    ``loss_class = sigmoid_focal_loss(obj_logits [N, 1], o, n, focal_alpha_obj_score, focal_gamma_obj_score)``,
    else ``loss_class = 0`` and ``o = 1``. ``loss_mask = sum_N o*F``, ``loss_dice = sum_N o*D``,
    ``loss_iou = sum_N o*I``; everything summed over steps and frames;
    ``core_loss = sum(weight_dict[k] * loss_k)`` over non-zero weights.
    """

    target_format = "video"
    required_output_keys = (_MASKS, _IOUS, _OBJ)

    @configurable
    def __init__(
        self,
        weight_dict: Mapping[str, float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2,
        supervise_all_iou: bool = False,
        iou_use_l1_loss: bool = False,
        pred_obj_scores: bool = False,
        focal_gamma_obj_score: float = 0.0,
        focal_alpha_obj_score: float = -1,
    ):
        super().__init__()
        weights = {str(k): float(v) for k, v in dict(weight_dict or {}).items()}
        for key in _REQUIRED_WEIGHTS:
            if key not in weights:
                raise ConfigError(
                    f"MultiStepMultiMasksAndIous: weight_dict is missing {key!r} (required: "
                    f"{', '.join(_REQUIRED_WEIGHTS)}; given: {', '.join(sorted(weights)) or '(none)'})"
                )
        for key in weights:
            if key not in _COMPUTED:
                raise ConfigError(
                    f"MultiStepMultiMasksAndIous: weight_dict key {key!r} is not a loss it computes; "
                    f"computed keys: {', '.join(_COMPUTED)}"
                )
        weights.setdefault("loss_class", 0.0)
        self.weight_dict = weights
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.supervise_all_iou = bool(supervise_all_iou)
        self.iou_use_l1_loss = bool(iou_use_l1_loss)
        self.pred_obj_scores = bool(pred_obj_scores)
        self.focal_gamma_obj_score = focal_gamma_obj_score
        self.focal_alpha_obj_score = focal_alpha_obj_score
        self.required_output_keys = (_MASKS, _IOUS, _OBJ) if self.pred_obj_scores else (_MASKS, _IOUS)

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.CRITERION.MULTISTEP
        return {
            "weight_dict": dict(c.WEIGHT_DICT),
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_gamma": c.FOCAL_GAMMA,
            "supervise_all_iou": c.SUPERVISE_ALL_IOU,
            "iou_use_l1_loss": c.IOU_USE_L1_LOSS,
            "pred_obj_scores": c.PRED_OBJ_SCORES,
            "focal_gamma_obj_score": c.FOCAL_GAMMA_OBJ_SCORE,
            "focal_alpha_obj_score": c.FOCAL_ALPHA_OBJ_SCORE,
        }

    def extra_repr(self) -> str:
        return (
            f"weight_dict={self.weight_dict}, supervise_all_iou={self.supervise_all_iou}, "
            f"iou_use_l1_loss={self.iou_use_l1_loss}, pred_obj_scores={self.pred_obj_scores}"
        )

    def forward(self, outs_batch: Sequence[Mapping[str, List[Tensor]]], targets_batch: Tensor) -> Dict[str, Tensor]:
        """outs_batch: list over T frames of dicts with per-step lists ``multistep_pred_multimasks_high_res``
        (each [N, M, H, W]), ``multistep_pred_ious`` (each [N, M]) and ``multistep_object_score_logits``
        (each [N, 1]; needed with ``pred_obj_scores``). targets_batch: [T, N, H, W] GT masks.
        Returns ``loss_mask``, ``loss_dice``, ``loss_iou``, ``loss_class``, ``core_loss``."""
        name = type(self).__name__
        if not torch.is_tensor(targets_batch) or targets_batch.dim() != 4:
            shape = tuple(targets_batch.shape) if torch.is_tensor(targets_batch) else type(targets_batch).__name__
            raise ValueError(f"{name}: targets_batch must be [T, N, H, W], got {shape}")
        if len(outs_batch) != targets_batch.shape[0]:
            raise ValueError(
                f"{name}: {len(outs_batch)} frames of outputs but targets_batch has T={targets_batch.shape[0]} "
                f"(shape {tuple(targets_batch.shape)})"
            )
        num_objects = torch.tensor(float(targets_batch.shape[1]), device=targets_batch.device)
        num_objects = float(torch.clamp(comm.all_reduce_mean(num_objects), min=1).item())

        zero = torch.zeros((), device=targets_batch.device)
        losses: Dict[str, Tensor] = {k: zero for k in _COMPUTED}
        target_iou_sum, target_iou_count = zero, zero
        for frame, (outs, targets) in enumerate(zip(outs_batch, targets_batch)):
            masks_list, ious_list = outs[_MASKS], outs[_IOUS]
            obj_list = outs.get(_OBJ)
            if obj_list is None:
                if self.pred_obj_scores:
                    raise ValueError(f"{name}: pred_obj_scores=True but frame {frame} has no {_OBJ!r}")
                obj_list = [None] * len(masks_list)
            if not (len(masks_list) == len(ious_list) == len(obj_list)):
                raise ValueError(
                    f"{name}: frame {frame} has {len(masks_list)} mask steps, {len(ious_list)} IoU steps and "
                    f"{len(obj_list)} object-score steps; they must match"
                )
            target_masks = targets.unsqueeze(1).float()  # [N, 1, H, W]
            # binary GT (the usual case): focal, dice and IoU in one fused pass per step
            # (segtrain.layers.binary_mask_losses), the per-pixel target terms shared by the steps
            fused: Dict[torch.dtype, Optional[BinaryTargets]] = {}
            for step, (src, ious, obj) in enumerate(zip(masks_list, ious_list, obj_list)):
                self._check_shapes(frame, step, src, ious, obj, targets)
                dtype = torch.promote_types(src.dtype, torch.float32)
                if dtype not in fused:
                    fused[dtype] = BinaryTargets.of(targets.flatten(1), self.focal_alpha, dtype)
                step, iou_sum, iou_count = self._step_losses(
                    src, target_masks, ious, num_objects, obj, fused.get(dtype)
                )
                target_iou_sum, target_iou_count = target_iou_sum + iou_sum, target_iou_count + iou_count
                for k, v in step.items():
                    losses[k] = losses[k] + v
        core: Tensor = zero
        for key, weight in self.weight_dict.items():
            if weight != 0:
                core = core + losses[key] * weight
        losses[CORE_LOSS_KEY] = core
        # a metric, not a loss: the mean of the IoUs that loss_iou regresses onto (present objects)
        losses[IOU_TARGET_MEAN_KEY] = target_iou_sum / target_iou_count.clamp(min=1)
        return losses

    def _check_shapes(self, frame: int, step: int, src: Tensor, ious: Tensor, obj, targets: Tensor) -> None:
        name = type(self).__name__
        where = f"frame {frame} step {step}"
        if src.dim() != 4 or src.shape[0] != targets.shape[0] or src.shape[-2:] != targets.shape[-2:]:
            raise ValueError(
                f"{name}: {where}: masks {tuple(src.shape)} do not fit targets [T, N, H, W] = "
                f"{(None,) + tuple(targets.shape)}; expected [N, M, H, W] = [{targets.shape[0]}, M, "
                f"{targets.shape[-2]}, {targets.shape[-1]}]"
            )
        if tuple(ious.shape) != tuple(src.shape[:2]):
            raise ValueError(
                f"{name}: {where}: ious {tuple(ious.shape)} do not fit masks {tuple(src.shape)}; expected [N, M]"
            )
        if self.pred_obj_scores and (obj.dim() != 2 or obj.shape[0] != src.shape[0] or obj.shape[1] != 1):
            raise ValueError(
                f"{name}: {where}: object_score_logits {tuple(obj.shape)} do not fit masks {tuple(src.shape)}; "
                "expected [N, 1]"
            )

    def _step_losses(
        self, src: Tensor, target_masks: Tensor, ious: Tensor, num_objects: float, obj, fused=None
    ) -> Tuple[Dict[str, Tensor], Tensor, Tensor]:
        """One prediction step: src [N, M, H, W], target_masks [N, 1, H, W] -> the four scalar
        losses, and the sum and count of the IoU targets of the supervised objects (detached).
        ``fused``: the frame's :class:`BinaryTargets` when its GT is binary (same values)."""
        # float32 as in the official code, float64 for float64 predictions (e.g. gradcheck)
        target_masks = target_masks.to(torch.promote_types(src.dtype, torch.float32)).expand_as(src)
        iou_dtype = ious.dtype if ious.is_floating_point() else torch.float32
        if fused is not None:
            loss_multimask, loss_multidice, actual_ious = multimask_focal_dice_iou(
                src.to(target_masks.dtype), fused, num_objects, gamma=self.focal_gamma
            )  # [N, M] each
            actual_ious = actual_ious.to(iou_dtype)
        else:
            loss_multimask = sigmoid_focal_loss(
                src, target_masks, num_objects, alpha=self.focal_alpha, gamma=self.focal_gamma, loss_on_multimask=True
            )  # [N, M]
            loss_multidice = dice_loss(src, target_masks, num_objects, loss_on_multimask=True)  # [N, M]
            with torch.no_grad():
                actual_ious = mask_ious(src, target_masks, 2, iou_dtype)
        if self.pred_obj_scores:
            target_obj = torch.any((target_masks[:, 0] > 0).flatten(1), dim=-1)[..., None].to(loss_multimask.dtype)
            loss_class = sigmoid_focal_loss(
                obj,
                target_obj.to(obj.dtype),
                num_objects,
                alpha=self.focal_alpha_obj_score,
                gamma=self.focal_gamma_obj_score,
            )
        else:
            target_obj = torch.ones(
                loss_multimask.shape[0], 1, dtype=loss_multimask.dtype, device=loss_multimask.device
            )
            loss_class = torch.zeros((), dtype=loss_multimask.dtype, device=loss_multimask.device)
        loss_multiiou = iou_loss(
            src,
            target_masks,
            ious,
            num_objects,
            loss_on_multimask=True,
            use_l1_loss=self.iou_use_l1_loss,
            actual_ious=actual_ious,
        )  # [N, M]
        if loss_multimask.size(1) > 1:
            combo = loss_multimask * self.weight_dict["loss_mask"] + loss_multidice * self.weight_dict["loss_dice"]
            best = torch.argmin(combo, dim=-1)
            rows = torch.arange(combo.size(0), device=combo.device)
            loss_mask = loss_multimask[rows, best].unsqueeze(1)
            loss_dice = loss_multidice[rows, best].unsqueeze(1)
            if self.supervise_all_iou:
                loss_iou = loss_multiiou.mean(dim=-1).unsqueeze(1)
                target_iou = actual_ious.mean(dim=-1, keepdim=True)
            else:
                loss_iou = loss_multiiou[rows, best].unsqueeze(1)
                target_iou = actual_ious[rows, best].unsqueeze(1)
        else:
            loss_mask, loss_dice, loss_iou = loss_multimask, loss_multidice, loss_multiiou
            target_iou = actual_ious
        losses = {
            "loss_mask": (loss_mask * target_obj).sum(),
            "loss_dice": (loss_dice * target_obj).sum(),
            "loss_iou": (loss_iou * target_obj).sum(),
            "loss_class": loss_class,
        }
        return losses, (target_iou * target_obj).sum().detach(), target_obj.sum().detach()


# loss_iou regresses onto the IoU of the model's own masks (their mean is iou_target_mean)
register_moving_target(r"^loss_iou(?P<suffix>.*)$", IOU_TARGET_MEAN_KEY + "{suffix}")
