"""Mask2Former's ``SetCriterion`` as the official code runs it: prediction by prediction
(final output, then each aux output), the per-image matching loop
(:func:`tests.reference.hungarian.hungarian_match_per_image`), one cross-entropy and one
point-sampled mask loss per prediction. Same keys, values (to float round-off) and RNG
consumption as ``segtrain.modeling.criterion.SetCriterion``, which the tests and
``tools/benchmark.py`` compare against it.
"""

import re
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.layers.losses import dice_loss, sigmoid_ce_loss
from segtrain.layers.point_sample import calculate_uncertainty, get_uncertain_point_coords_with_randomness, point_sample
from segtrain.utils import comm

from .hungarian import hungarian_match_per_image

__all__ = ["ReferenceSetCriterion"]

_LOSS_KEYS = {"labels": ("loss_ce",), "masks": ("loss_mask", "loss_dice")}


class ReferenceSetCriterion(nn.Module):
    """The per-prediction, per-image loop with ``SetCriterion``'s settings (same arguments;
    ``matcher`` is a ``HungarianMatcher``, whose cost weights and ``num_points`` the loop
    uses). :meth:`of` copies an existing criterion's settings.

    forward(outputs, targets): outputs ``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, h, w]
    logits, optional ``aux_outputs``; targets: B dicts ``labels`` [n_b] int64, ``masks``
    [n_b, H, W]. Returns ``loss_ce``, ``loss_mask``, ``loss_dice`` (aux: ``loss_ce_0`` ...),
    ``class_error`` of the final prediction, ``core_loss`` and the detached
    ``core_loss_final`` / ``core_loss_aux``.
    """

    target_format = "instances"
    required_output_keys = ("pred_logits", "pred_masks")

    def __init__(
        self,
        num_classes: int,
        matcher,
        weight_dict: Dict[str, float],
        eos_coef: float,
        losses: Sequence[str],
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
        *,
        deep_supervision: bool = True,
        match_order: str = "query",
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = list(losses)
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.deep_supervision = bool(deep_supervision)
        self.match_order = match_order
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = float(eos_coef)
        self.register_buffer("empty_weight", empty_weight)
        self._base_keys = [k for name in self.losses for k in _LOSS_KEYS[name]]

    @classmethod
    def of(cls, criterion) -> "ReferenceSetCriterion":
        """The reference loop with the settings of ``criterion`` (a ``SetCriterion``), on its device."""
        return cls(
            criterion.num_classes,
            criterion.matcher,
            criterion.weight_dict,
            criterion.eos_coef,
            criterion.losses,
            criterion.num_points,
            criterion.oversample_ratio,
            criterion.importance_sample_ratio,
            deep_supervision=criterion.deep_supervision,
            match_order=criterion.match_order,
        ).to(criterion.empty_weight.device)

    def weight_of(self, key: str) -> float:
        """A key's own weight, else its base key's (``loss_ce_3`` -> ``loss_ce``), else 0."""
        if key in self.weight_dict:
            return self.weight_dict[key]
        m = re.fullmatch(r"(.+)_(\d+)", key)
        base = key if key in self._base_keys else (m.group(1) if m and m.group(1) in self._base_keys else None)
        return self.weight_dict.get(base, 0.0) if base else 0.0

    def forward(self, outputs: Dict[str, Tensor], targets) -> Dict[str, Tensor]:
        aux = list(outputs.get("aux_outputs") or []) if self.deep_supervision else []
        layers = [{k: v for k, v in outputs.items() if k != "aux_outputs"}] + aux
        names = ["outputs"] + [f"aux_outputs[{i}]" for i in range(len(aux))]
        suffixes = [""] + [f"_{i}" for i in range(len(aux))]
        device = outputs["pred_logits"].device
        num_masks = torch.full((1,), float(sum(len(t["labels"]) for t in targets)), device=device)
        num_masks = torch.clamp(comm.all_reduce_mean(num_masks), min=1)[0]
        target_masks = self._padded_target_masks(targets, device) if "masks" in self.losses else None
        losses: Dict[str, Tensor] = {}
        for layer, name, suffix in zip(layers, names, suffixes):
            indices = hungarian_match_per_image(self.matcher, layer, targets, layer_name=name)
            b_idx, src, tgt = self._pairs(indices)
            for loss in self.losses:
                if loss == "labels":
                    losses["loss_ce" + suffix] = self._loss_labels(layer, targets, b_idx, src, tgt)
                    if not suffix:
                        losses["class_error"] = self._class_error(layer, targets, b_idx, src, tgt)
                else:
                    loss_mask, loss_dice = self._loss_masks(layer, target_masks, targets, b_idx, src, tgt, num_masks)
                    losses["loss_mask" + suffix], losses["loss_dice" + suffix] = loss_mask, loss_dice
        zero = outputs["pred_logits"].sum().float() * 0.0
        final = sum((self.weight_of(k) * losses[k] for k in self._base_keys if self.weight_of(k) != 0), zero)
        aux_total = sum(
            (self.weight_of(k) * v for k, v in losses.items() if k not in self._base_keys and self.weight_of(k) != 0),
            zero,
        )
        losses["core_loss"] = final + aux_total
        losses["core_loss_final"] = final.detach()
        losses["core_loss_aux"] = aux_total.detach()
        return losses

    def _pairs(self, indices) -> Tuple[Tensor, Tensor, List[Tuple[int, int]]]:
        """(image index [M], query index [M], (image, GT index) per match), per image in
        query order ("query") or GT order ("target")."""
        b_idx, src, tgt = [], [], []
        for b, (i, j) in enumerate(indices):
            order = torch.argsort(j) if self.match_order == "target" else torch.argsort(i)
            b_idx += [b] * len(i)
            src += i[order].tolist()
            tgt += [(b, int(jj)) for jj in j[order]]
        return torch.as_tensor(b_idx, dtype=torch.int64), torch.as_tensor(src, dtype=torch.int64), tgt

    @staticmethod
    def _padded_target_masks(targets, device) -> List[Tensor]:
        """Each image's GT masks as float32 [n_b, H, W], zero-padded to the batch's largest H, W."""
        masks = [torch.as_tensor(t["masks"]).to(device) for t in targets]
        H = max(m.shape[-2] for m in masks)
        W = max(m.shape[-1] for m in masks)
        out = []
        for m in masks:
            padded = torch.zeros(m.shape[0], H, W, dtype=torch.float32, device=device)
            padded[:, : m.shape[1], : m.shape[2]] = m
            out.append(padded)
        return out

    def _loss_labels(self, layer, targets, b_idx, src, tgt) -> Tensor:
        src_logits = layer["pred_logits"].float()  # [B, Q, K+1]
        dev = src_logits.device
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=dev)
        if tgt:
            labels = torch.stack([torch.as_tensor(targets[b]["labels"]).to(dev)[j] for b, j in tgt]).long()
            target_classes[b_idx.to(dev), src.to(dev)] = labels
        return F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight.float())

    @staticmethod
    def _class_error(layer, targets, b_idx, src, tgt) -> Tensor:
        logits = layer["pred_logits"].detach()
        if not tgt:
            return logits.new_tensor(100.0, dtype=torch.float)
        dev = logits.device
        labels = torch.stack([torch.as_tensor(targets[b]["labels"]).to(dev)[j] for b, j in tgt])
        pred = logits[b_idx.to(dev), src.to(dev)].argmax(-1)
        return 100.0 - (pred == labels).float().mean() * 100.0

    def _loss_masks(self, layer, target_masks, targets, b_idx, src, tgt, num_masks) -> Tuple[Tensor, Tensor]:
        pred_masks = layer["pred_masks"]
        if not tgt:  # no GT in the batch: zero, still attached to the graph
            z = pred_masks.sum().float() * 0.0
            return z, z.clone()
        dev = pred_masks.device
        dev_type = dev.type if dev.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
        with torch.autocast(device_type=dev_type, enabled=False):
            src_masks = pred_masks[b_idx.to(dev), src.to(dev)].float()[:, None]  # [M, 1, h, w]
            tgt_masks = torch.stack([target_masks[b][j] for b, j in tgt])[:, None]  # [M, 1, H, W]
            with torch.no_grad():
                coords = get_uncertain_point_coords_with_randomness(
                    src_masks,
                    calculate_uncertainty,
                    self.num_points,
                    self.oversample_ratio,
                    self.importance_sample_ratio,
                )
                point_labels = point_sample(tgt_masks, coords, align_corners=False).squeeze(1)
            point_logits = point_sample(src_masks, coords, align_corners=False).squeeze(1)
            return sigmoid_ce_loss(point_logits, point_labels, num_masks), dice_loss(
                point_logits, point_labels, num_masks
            )
