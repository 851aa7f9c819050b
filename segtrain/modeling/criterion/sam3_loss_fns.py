"""SAM 3 loss pieces for find batches: ``Boxes``, ``IABCEMdetr`` (``Masks`` is in ``sam3_masks``;
docs/losses.md#sam3).

Every piece is a :class:`LossWithWeights`: called as
``piece(outputs=, targets=, indices=, num_boxes=, is_aux=False)`` it returns its unweighted
components plus ``core_loss = sum(weight_dict[k] * losses[k])`` over non-zero weights.
``Sam3LossWrapper`` visits the outputs, matches them and adds the pieces' ``core_loss``.

Shapes: ``B`` finds, ``Q`` queries, ``T`` packed target rows, ``M`` matched pairs given by
``indices = (batch_idx [M], src_idx [M], tgt_idx [M] or None)`` (None: targets in packed order).
Outputs: ``pred_logits [B, Q, 1]``, ``pred_boxes [B, Q, 4]`` cxcywh, ``pred_boxes_xyxy [B, Q, 4]``
(derived from ``pred_boxes`` when absent), ``pred_masks [B, Q, h, w]``, ``presence_logit_dec [B, 1]``.
Targets: ``boxes [T, 4]`` cxcywh, ``boxes_xyxy [T, 4]`` (derived when absent), ``num_boxes [B]``,
``boxes_padded [B, maxn, 4]``, ``object_ids_padded [B, maxn]``, ``masks [T, H, W]`` or None,
``is_valid_mask [T]``, ``is_exhaustive [B]``.
"""

import logging
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.layers.losses import sigmoid_focal_loss
from segtrain.structures.boxes import box_cxcywh_to_xyxy, box_iou_paired, generalized_box_iou_paired
from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import Registry

from .build import CORE_LOSS_KEY

__all__ = ["SAM3_LOSS_REGISTRY", "LossWithWeights", "Boxes", "IABCEMdetr", "build_sam3_loss_fn"]

logger = logging.getLogger(__name__)

SAM3_LOSS_REGISTRY = Registry("SAM3_LOSS")
SAM3_LOSS_REGISTRY.__doc__ = """SAM 3 loss pieces (LossWithWeights subclasses), registered by class name.
Called as ``Piece(cfg)`` (through ``from_config``) by ``Sam3LossWrapper.from_config`` for each
name in ``MODEL.CRITERION.SAM3.LOSS_FNS``."""

Indices = Tuple[Tensor, Tensor, Optional[Tensor]]
Number = Union[float, Tensor]


def build_sam3_loss_fn(name: str, cfg) -> "LossWithWeights":
    """The SAM 3 loss piece registered as ``name``, built from ``cfg``."""
    return SAM3_LOSS_REGISTRY.get(name)(cfg)


def _check_indices(indices, owner: str) -> Indices:
    if not isinstance(indices, (tuple, list)) or len(indices) != 3:
        raise ValueError(
            f"{owner}: indices must be the triple (batch_idx, src_idx, tgt_idx) of a find matcher, "
            f"got {type(indices).__name__} of length {len(indices) if hasattr(indices, '__len__') else '?'}"
        )
    return indices[0], indices[1], indices[2]


def _select(rows: Tensor, tgt_idx: Optional[Tensor]) -> Tensor:
    """Packed target rows in matched order: ``rows[tgt_idx]`` or ``rows`` when tgt_idx is None."""
    return rows if tgt_idx is None else rows[tgt_idx]


def _at_least_f32(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it already is (half precision is upcast)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _pred_boxes_xyxy(outputs: Mapping[str, Tensor]) -> Tensor:
    boxes = outputs.get("pred_boxes_xyxy")
    return boxes if boxes is not None else box_cxcywh_to_xyxy(outputs["pred_boxes"])


def _target_boxes_xyxy(targets: Mapping[str, Tensor]) -> Tensor:
    boxes = targets.get("boxes_xyxy")
    return boxes if boxes is not None else box_cxcywh_to_xyxy(targets["boxes"])


class LossWithWeights(nn.Module):
    """Base of the SAM 3 loss pieces.

    weight_dict: ``{loss key: weight}`` (copied; ``None`` = no weights). Keys must be among
        the piece's ``computed_keys`` (checked at construction and when reducing).
    compute_aux: whether the piece runs on auxiliary outputs (``is_aux=True``); when False an
        aux call returns ``{core_loss: 0.0}`` only.

    Subclasses implement ``get_loss(outputs, targets, indices, num_boxes) -> dict`` and declare
    ``computed_keys``, ``required_output_keys`` and ``required_target_keys``.
    """

    computed_keys: Tuple[str, ...] = ()
    required_output_keys: Tuple[str, ...] = ()
    required_target_keys: Tuple[str, ...] = ()
    # whether Sam3LossWrapper also runs this piece on the one-to-many (``_o2m``) outputs
    supports_o2m_loss: bool = True

    def __init__(self, weight_dict: Optional[Mapping[str, float]], compute_aux: bool):
        super().__init__()
        self.weight_dict: Dict[str, float] = {str(k): float(v) for k, v in dict(weight_dict or {}).items()}
        self.compute_aux = bool(compute_aux)
        if self.computed_keys:
            for key in self.weight_dict:
                if key not in self.computed_keys:
                    raise ConfigError(
                        f"{type(self).__name__}: weight_dict key {key!r} is not a loss it computes; "
                        f"computed keys: {', '.join(self.computed_keys)}"
                    )

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
        indices: Indices,
        num_boxes: Number,
        is_aux: bool = False,
    ) -> Dict[str, Union[Tensor, float]]:
        """Components of ``get_loss`` plus ``core_loss``; ``{core_loss: 0.0}`` for a skipped aux output."""
        if is_aux and not self.compute_aux:
            return {CORE_LOSS_KEY: 0.0}
        losses = self.get_loss(outputs, targets, indices, num_boxes)
        losses[CORE_LOSS_KEY] = self.reduce_loss(losses)
        return losses

    def get_loss(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        raise NotImplementedError

    def reduce_loss(self, losses: Mapping[str, Tensor]) -> Union[Tensor, float]:
        """``sum(weight_dict[k] * losses[k])`` over non-zero weights."""
        total: Union[Tensor, float] = 0.0
        for key, weight in self.weight_dict.items():
            if key not in losses:
                raise ValueError(
                    f"{type(self).__name__}: weight_dict key {key!r} is not a loss it computes; "
                    f"computed keys: {', '.join(sorted(losses))}"
                )
            if weight != 0:
                total = total + losses[key] * weight
        return total

    def extra_repr(self) -> str:
        return f"weight_dict={self.weight_dict}, compute_aux={self.compute_aux}"


@SAM3_LOSS_REGISTRY.register()
class Boxes(LossWithWeights):
    """L1 and GIoU box losses over matched pairs.

    ``loss_bbox = sum_i |b_i - g_i|_1 / num_boxes`` (cxcywh) and
    ``loss_giou = sum_i (1 - GIoU(b_i, g_i)) / num_boxes`` (xyxy), i over the M matched pairs.
    """

    computed_keys = ("loss_bbox", "loss_giou")
    required_output_keys = ("pred_boxes",)
    required_target_keys = ("boxes",)

    @configurable
    def __init__(self, weight_dict: Optional[Mapping[str, float]] = None, compute_aux: bool = True):
        super().__init__(weight_dict, compute_aux)

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.CRITERION.SAM3.BOXES
        return {"weight_dict": dict(c.WEIGHT_DICT), "compute_aux": c.COMPUTE_AUX}

    def get_loss(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        b, q, t = _check_indices(indices, type(self).__name__)
        src = _at_least_f32(outputs["pred_boxes"][(b, q)])  # [M, 4]
        src_xyxy = _at_least_f32(_pred_boxes_xyxy(outputs)[(b, q)])
        tgt = _select(targets["boxes"], t).to(src)
        tgt_xyxy = _select(_target_boxes_xyxy(targets), t).to(src)
        if src.shape != tgt.shape:
            raise ValueError(
                f"Boxes: {src.shape[0]} matched predictions but {tgt.shape[0]} target boxes "
                "(tgt_idx None requires targets in matched order)"
            )
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        loss_giou = (1 - generalized_box_iou_paired(src_xyxy, tgt_xyxy)).sum() / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}


@SAM3_LOSS_REGISTRY.register()
class IABCEMdetr(LossWithWeights):
    """IoU-aware binary cross-entropy on query scores, with optional presence supervision.

    ``s = pred_logits[..., 0]`` [B, Q], ``p = sigmoid(s)``, ``y[b, q] = 1`` at matched queries.
    Soft positive target ``t = clamp(p**alpha * IoU(pred_xyxy, gt_xyxy)**(1-alpha), min=0.01)``
    (detached) at matched queries. Per query:
    ``l = pos_weight * y * BCE(s, t) [* pad_scale_pos] + (1 - y) * p**gamma * BCE(s, 0)``
    (``pos_focal``: the positive term is the focal loss with alpha 0.5 and ``gamma``;
    ``pad_scale_pos`` only when ``pad_n_queries`` is an int > Q).

    ``use_presence``: a find has GT when some padded object (id >= 0) has w > 0 and h > 0;
    ``l`` is zeroed for finds without GT; with ``presence_logit_dec [B, 1]`` in the outputs,
    ``presence_loss = sigmoid_focal_loss(presence_logit, has_gt, B, presence_alpha, presence_gamma)``
    and ``presence_dec_acc`` = accuracy of ``sigmoid > 0.5``.

    Reduction: ``weak_loss``: negatives of non-exhaustive finds are masked and
    ``loss_ce = sum(l * keep) / (sum(keep) + 1e-6)``; otherwise ``mean(l)`` over B*Q, or
    ``sum(l) / (pad_n_queries * B)`` when ``pad_n_queries`` > Q. ``ce_f1`` is the binary F1
    of ``p > 0.5`` against ``y`` (a metric, no gradient).
    """

    computed_keys = ("loss_ce", "ce_f1", "presence_loss", "presence_dec_acc")
    required_output_keys = ("pred_logits", "pred_boxes")
    required_target_keys = ("boxes",)

    @configurable
    def __init__(
        self,
        pos_weight: float,
        weight_dict: Optional[Mapping[str, float]] = None,
        compute_aux: bool = True,
        gamma: float = 0,
        weak_loss: bool = True,
        alpha: float = 0.25,
        pad_n_queries: Optional[int] = None,
        pad_scale_pos: float = 1.0,
        use_presence: bool = False,
        presence_alpha: float = 0.5,
        presence_gamma: float = 0.0,
        pos_focal: bool = False,
    ):
        super().__init__(weight_dict, compute_aux)
        if pad_scale_pos != 1.0 and pad_n_queries is None:
            raise ConfigError(f"IABCEMdetr: pad_scale_pos={pad_scale_pos} needs pad_n_queries (an int); got None")
        self.pos_weight = float(pos_weight)
        self.gamma = gamma
        self.weak_loss = bool(weak_loss)
        self.alpha = float(alpha)
        self.pad_n_queries = pad_n_queries
        self.pad_scale_pos = float(pad_scale_pos)
        self.use_presence = bool(use_presence)
        self.presence_alpha = float(presence_alpha)
        self.presence_gamma = float(presence_gamma)
        self.pos_focal = bool(pos_focal)
        keys = ["boxes"]
        if self.weak_loss:
            keys.append("is_exhaustive")
        if self.use_presence:
            keys += ["boxes_padded", "object_ids_padded"]
        self.required_target_keys = tuple(keys)

    @classmethod
    def from_config(cls, cfg) -> dict:
        c = cfg.MODEL.CRITERION.SAM3.IABCE
        return {
            "pos_weight": c.POS_WEIGHT,
            "weight_dict": dict(c.WEIGHT_DICT),
            "compute_aux": c.COMPUTE_AUX,
            "gamma": c.GAMMA,
            "weak_loss": c.WEAK_LOSS,
            "alpha": c.ALPHA,
            "pad_n_queries": int(c.PAD_N_QUERIES) if c.PAD_N_QUERIES else None,
            "pad_scale_pos": c.PAD_SCALE_POS,
            "use_presence": c.USE_PRESENCE,
            "presence_alpha": c.PRESENCE_ALPHA,
            "presence_gamma": c.PRESENCE_GAMMA,
            "pos_focal": c.POS_FOCAL,
        }

    def _pads(self, num_queries: int) -> bool:
        pad = self.pad_n_queries
        return isinstance(pad, int) and not isinstance(pad, bool) and num_queries < pad

    def get_loss(self, outputs, targets, indices, num_boxes) -> Dict[str, Tensor]:
        b, q, t = _check_indices(indices, type(self).__name__)
        logits = outputs["pred_logits"]
        if logits.dim() != 3 or logits.shape[-1] != 1:
            raise ValueError(f"IABCEMdetr: pred_logits must be [B, Q, 1], got shape {tuple(logits.shape)}")
        src_logits = logits.squeeze(-1)  # [B, Q]
        prob = src_logits.sigmoid()
        bsz, num_queries = src_logits.shape

        with torch.no_grad():
            y = torch.zeros(bsz, num_queries, dtype=prob.dtype, device=prob.device)
            y[(b, q)] = 1
            src_xyxy = _at_least_f32(_pred_boxes_xyxy(outputs)[(b, q)])
            tgt_xyxy = _select(_target_boxes_xyxy(targets), t).to(src_xyxy)
            iou, _ = box_iou_paired(src_xyxy, tgt_xyxy)
            soft = _at_least_f32(prob[(b, q)]) ** self.alpha * iou ** (1 - self.alpha)
            soft = torch.clamp(soft, min=0.01)
            pos_target = y.clone()
            pos_target[(b, q)] = soft.to(pos_target.dtype)

        if self.pos_focal:
            loss = sigmoid_focal_loss(
                src_logits[:, :, None, None],
                pos_target[:, :, None, None],
                1,
                alpha=0.5,
                gamma=self.gamma,
                loss_on_multimask=True,
            )
        else:
            loss = F.binary_cross_entropy_with_logits(src_logits, pos_target, reduction="none")
        loss = loss * y * self.pos_weight
        if self._pads(num_queries):
            loss = loss * self.pad_scale_pos
        loss = loss + F.binary_cross_entropy_with_logits(src_logits, y, reduction="none") * (1 - y) * prob**self.gamma

        presence_loss = torch.zeros((), device=src_logits.device)
        presence_dec_acc = torch.zeros((), device=src_logits.device)
        if self.use_presence:
            ids = targets["object_ids_padded"]
            boxes_padded = targets["boxes_padded"]
            visible = (ids >= 0) & (boxes_padded[..., 2] > 0) & (boxes_padded[..., 3] > 0)  # [B, maxn]
            has_gt = (visible.sum(dim=-1)[..., None] != 0).to(loss.dtype)  # [B, 1]
            loss = loss * has_gt
            if "presence_logit_dec" in outputs and outputs["presence_logit_dec"] is not None:
                presence_logits = outputs["presence_logit_dec"].reshape(has_gt.shape)
                presence_loss = sigmoid_focal_loss(
                    presence_logits,
                    has_gt.to(presence_logits.dtype),
                    presence_logits.shape[0],
                    alpha=self.presence_alpha,
                    gamma=self.presence_gamma,
                )
                with torch.no_grad():
                    pred = (presence_logits.sigmoid() > 0.5).to(has_gt.dtype)
                    presence_dec_acc = (pred == has_gt).float().mean()

        if self.weak_loss:
            is_exhaustive = targets["is_exhaustive"].to(device=loss.device, dtype=torch.bool)
            if is_exhaustive.shape != (bsz,):
                raise ValueError(f"IABCEMdetr: is_exhaustive must be [B]={bsz}, got shape {tuple(is_exhaustive.shape)}")
            keep = ~((~is_exhaustive)[:, None] & (y < 0.5))  # [B, Q]
            loss_ce = (loss * keep.to(loss.dtype)).sum() / (keep.sum() + 1e-6)
        elif self._pads(num_queries):
            loss_ce = loss.sum() / (self.pad_n_queries * bsz)
        else:
            loss_ce = loss.mean()

        with torch.no_grad():
            pred = prob.detach() > 0.5
            pos = y > 0.5
            tp = (pred & pos).sum()
            fp = (pred & ~pos).sum()
            fn = (~pred & pos).sum()
            denom = (2 * tp + fp + fn).float()
            ce_f1 = torch.where(denom > 0, 2 * tp.float() / denom.clamp(min=1), torch.zeros_like(denom))

        return {
            "loss_ce": loss_ce,
            "ce_f1": ce_f1,
            "presence_loss": presence_loss,
            "presence_dec_acc": presence_dec_acc,
        }
