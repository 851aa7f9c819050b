"""Mask2Former ``SetCriterion``: Hungarian-matched class + point-sampled mask losses with
deep supervision (docs/losses.md, "Mask2Former").

Inputs. ``outputs``: ``pred_logits`` [B, Q, K+1] (index K = no object), ``pred_masks``
[B, Q, h, w] logits, optional ``aux_outputs`` (list of dicts with the same keys).
``targets``: list of B dicts ``labels`` [n_b] int64 in [0, K), ``masks`` [n_b, H, W].

Per prediction (the final output, then each ``aux_outputs[i]``), after matching:

* ``loss_ce`` = weighted-mean cross-entropy over all B*Q queries, unmatched target K,
  class weights 1 except ``eos_coef`` for K: ``sum_i w[y_i] * nll_i / sum_i w[y_i]``;
* ``loss_mask`` = ``sigmoid_ce_loss(point_logits, point_labels, num_masks)`` and
  ``loss_dice`` = ``dice_loss(point_logits, point_labels, num_masks)``, with points
  from ``get_uncertain_point_coords_with_randomness`` on the matched predictions
  (no grad); GT and logits sampled at the same points (no upsampling).

``num_masks`` = total GT masks in the batch, averaged over processes through
``segtrain.utils.comm.all_reduce_mean`` and clamped to >= 1.

Returns the unweighted ``loss_ce``, ``loss_mask``, ``loss_dice`` (aux: ``loss_ce_0``
...), ``core_loss = sum weight * value`` over keys with a non-zero weight (an aux key
takes its base key's weight unless ``weight_dict`` names it), and the detached logging
scalars ``core_loss_final`` (final-prediction terms) and ``core_loss_aux`` (aux terms),
and, with the ``"labels"`` loss, DETR's ``class_error``: 100 minus the top-1 accuracy (in
percent, argmax over the K+1 classes) of the final prediction's matched queries, a metric
with no weight (100 when nothing is matched, as in DETR). Masks that are learned while
``class_error`` stays near 100 mean queries that still rank "no object" or a wrong class first.

Order of matched masks for point sampling. ``match_order="query"`` (default) keeps the
official order (pairs sorted by query index), for bit parity of the random points with the
official code under the same seed. ``match_order="target"`` takes
the matched pairs of each image in GT order, so row r of ``torch.rand(M, S, 2)`` always
belongs to the same GT mask and the loss is exactly invariant to a permutation of the
queries under a fixed seed (the official order is invariant only in distribution).

All predictions are computed together, equal to the official per-prediction loop
(``tests/reference/set_criterion.py``) to float32 round-off under the same RNG state (the
mask points are summed in another order): every
random number is drawn first, in exactly the order the loop draws them (per prediction: the
matcher's per-image points, then the oversampled and the random mask points); then
:meth:`HungarianMatcher.match_many` matches every prediction, ``loss_ce`` of all predictions
is one cross-entropy call, the matched masks of all predictions are concatenated,
importance-sampled prediction by prediction (``topk`` without its final sort: the same
points, not in sorted order; no temporary larger than one prediction's: see
docs/benchmarks.md on page faults) and sampled with one ``grid_sample``, and the GT masks
with another (each GT mask at the points of all its matches). The matcher must have
``match_many`` and ``draw_point_coords`` (``HungarianMatcher``).
"""

import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.modeling.matcher.build import build_matcher
from segtrain.structures.packed_instances import PackedInstanceTargets, pack_instance_targets
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError, DatasetError

from .build import CORE_LOSS_KEY, CRITERION_REGISTRY
from .mask_points import draw_in_loop_order, matched_mask_losses

__all__ = ["SetCriterion"]

logger = logging.getLogger(__name__)

# loss name (the ``losses`` argument) -> keys it returns
_LOSS_KEYS = {"labels": ("loss_ce",), "masks": ("loss_mask", "loss_dice")}
_MATCH_ORDERS = ("target", "query")


@CRITERION_REGISTRY.register()
class SetCriterion(nn.Module):
    """Mask2Former's criterion (see the module docstring for the exact semantics).

    Args (official order): num_classes K; matcher (a ``HungarianMatcher``); weight_dict
    ``{loss key: weight}``; eos_coef (class weight of "no object"); losses (subset of
    ``["labels", "masks"]``); num_points P; oversample_ratio; importance_sample_ratio.
    Keyword-only: deep_supervision (compute aux losses; default True), match_order
    ("target" or "query").
    """

    required_output_keys = ("pred_logits", "pred_masks")
    target_format = "instances"

    @configurable
    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
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
        if int(num_classes) < 1:
            raise ConfigError(f"SetCriterion: num_classes must be >= 1, got {num_classes}")
        losses = list(losses)
        for name in losses:
            if name not in _LOSS_KEYS:
                raise ConfigError(f"SetCriterion: unknown loss {name!r} in losses; valid: {sorted(_LOSS_KEYS)}")
        if match_order not in _MATCH_ORDERS:
            raise ConfigError(f"SetCriterion: match_order={match_order!r}; valid: {list(_MATCH_ORDERS)}")
        if "masks" in losses:
            if int(num_points) < 1:
                raise ConfigError(f"SetCriterion: num_points must be >= 1 with the 'masks' loss, got {num_points}")
            if oversample_ratio < 1:
                raise ConfigError(f"SetCriterion: oversample_ratio must be >= 1, got {oversample_ratio}")
            if not 0 <= importance_sample_ratio <= 1:
                raise ConfigError(
                    f"SetCriterion: importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
                )
        self.num_classes = int(num_classes)
        self.matcher = matcher
        self.weight_dict = {str(k): float(v) for k, v in dict(weight_dict).items()}  # a copy: never mutate the caller's
        self.eos_coef = float(eos_coef)
        self.losses = losses
        self.num_points = int(num_points)
        self.oversample_ratio = float(oversample_ratio)
        self.importance_sample_ratio = float(importance_sample_ratio)
        self.deep_supervision = bool(deep_supervision)
        self.match_order = match_order
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef
        self.register_buffer("empty_weight", empty_weight)
        self._base_keys = [k for name in losses for k in _LOSS_KEYS[name]]
        for k in self.weight_dict:
            if self._split_key(k) is None:
                raise ConfigError(
                    f"SetCriterion: weight_dict key {k!r} is not a loss this criterion computes; "
                    f"it computes {self._base_keys} (aux copies: <key>_<i>), from losses={losses}"
                )

    @classmethod
    def from_config(cls, cfg) -> Dict:
        node = cfg.MODEL.CRITERION.SET_CRITERION
        head = cfg.MODEL.get("SEM_SEG_HEAD", None)
        if head is None or "NUM_CLASSES" not in head:
            raise ConfigError(
                "SetCriterion needs MODEL.SEM_SEG_HEAD.NUM_CLASSES (the number of classes K), "
                "which this config does not define"
            )
        return {
            "num_classes": head.NUM_CLASSES,
            "matcher": build_matcher(cfg),
            "weight_dict": dict(node.WEIGHT_DICT),
            "eos_coef": node.EOS_COEF,
            "losses": list(node.LOSSES),
            "num_points": node.NUM_POINTS,
            "oversample_ratio": node.OVERSAMPLE_RATIO,
            "importance_sample_ratio": node.IMPORTANCE_SAMPLE_RATIO,
            "deep_supervision": node.get("DEEP_SUPERVISION", True),
        }

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, weight_dict={self.weight_dict}, eos_coef={self.eos_coef}, "
            f"losses={self.losses}, num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_sample_ratio={self.importance_sample_ratio}, match_order={self.match_order!r}"
        )

    # ------------------------------------------------------------------ keys and weights
    def _split_key(self, key: str) -> Optional[Tuple[str, Optional[int]]]:
        """'loss_ce' -> ('loss_ce', None); 'loss_ce_3' -> ('loss_ce', 3); anything else -> None."""
        if key in self._base_keys:
            return key, None
        m = re.fullmatch(r"(.+)_(\d+)", key)
        if m and m.group(1) in self._base_keys:
            return m.group(1), int(m.group(2))
        return None

    def weight_of(self, key: str) -> float:
        """The weight of a computed key: its own entry, else its base key's, else 0."""
        if key in self.weight_dict:
            return self.weight_dict[key]
        split = self._split_key(key)
        return self.weight_dict.get(split[0], 0.0) if split else 0.0

    def check_weight_keys(self, num_aux: int) -> None:
        computed = [k + s for s in [""] + [f"_{i}" for i in range(num_aux)] for k in self._base_keys]
        for k in self.weight_dict:
            if k not in computed:
                raise ConfigError(
                    f"SetCriterion: weight_dict key {k!r} is not computed for these outputs ({num_aux} aux_outputs); "
                    f"computed keys: {', '.join(computed)}"
                )

    # ------------------------------------------------------------------ forward
    def forward(self, outputs: Dict[str, Tensor], targets) -> Dict[str, Tensor]:
        """outputs / targets as in the module docstring. Returns the loss dict."""
        if not (hasattr(self.matcher, "match_many") and hasattr(self.matcher, "draw_point_coords")):
            raise ConfigError(
                f"SetCriterion: the matcher {type(self.matcher).__name__} has no match_many / "
                "draw_point_coords; valid: HungarianMatcher"
            )
        for k in self.required_output_keys:
            if k not in outputs:
                raise ConfigError(
                    f"SetCriterion: the model outputs have no {k!r}; it needs {list(self.required_output_keys)}, "
                    f"got {sorted(outputs)}"
                )
        aux = list(outputs.get("aux_outputs", None) or []) if self.deep_supervision else []
        self.check_weight_keys(len(aux))
        layers = [{k: v for k, v in outputs.items() if k != "aux_outputs"}] + aux
        suffixes = [""] + [f"_{i}" for i in range(len(aux))]
        names = ["outputs"] + [f"aux_outputs[{i}]" for i in range(len(aux))]
        device = outputs["pred_logits"].device
        B = outputs["pred_logits"].shape[0]
        if len(targets) != B:
            raise DatasetError(f"SetCriterion: {len(targets)} targets for a batch of {B} predictions")
        packed = pack_instance_targets(
            targets,
            device=device,
            need_masks="masks" in self.losses
            or getattr(self.matcher, "cost_mask", 1) != 0
            or getattr(self.matcher, "cost_dice", 1) != 0,
        )
        # On an accelerator the labels are checked after matching, whose cost-matrix copy to the
        # host is the step's one synchronisation; reading the flag then costs no stall.
        label_flag = None
        if device.type == "cpu":
            self._check_labels(packed)
        elif packed.labels.numel():
            label_flag = ((packed.labels < 0) | (packed.labels >= self.num_classes)).any()
        # a fill kernel, not a host -> device copy, and kept on the device (no .item()): no sync
        num_masks = torch.full((1,), float(packed.num_masks), dtype=torch.float, device=device)
        num_masks = torch.clamp(comm.all_reduce_mean(num_masks), min=1)[0]
        per_layer = self._losses_batched(layers, packed, num_masks, names, label_flag)
        losses: Dict[str, Tensor] = {}
        for suffix, values in zip(suffixes, per_layer):
            for k, v in values.items():
                losses[k + suffix] = v
        final_terms = [self.weight_of(k) * losses[k] for k in self._base_keys if self.weight_of(k) != 0]
        aux_terms = [
            self.weight_of(k) * v for k, v in losses.items() if k not in self._base_keys and self.weight_of(k) != 0
        ]
        zero = outputs["pred_logits"].sum() * 0.0  # keeps the graph when nothing is weighted
        core_final = sum(final_terms, zero.float())
        core_aux = sum(aux_terms, zero.float())
        losses[CORE_LOSS_KEY] = core_final + core_aux
        losses[CORE_LOSS_KEY + "_final"] = core_final.detach()
        losses[CORE_LOSS_KEY + "_aux"] = core_aux.detach()
        return losses

    def _check_labels(self, packed: PackedInstanceTargets) -> None:
        lab = packed.labels
        if lab.numel() and bool(((lab < 0) | (lab >= self.num_classes)).any()):
            bad = lab[(lab < 0) | (lab >= self.num_classes)][:5].tolist()
            raise DatasetError(
                f"SetCriterion: GT labels {bad} are outside [0, num_classes={self.num_classes}); "
                "check MODEL.SEM_SEG_HEAD.NUM_CLASSES and the dataset's contiguous category ids"
            )

    # ------------------------------------------------------------------ matched pairs
    def _ordered_pairs(self, indices, packed: PackedInstanceTargets):
        """(batch_idx, src_idx, packed_tgt_row) int64 CPU tensors, in ``match_order``."""
        b_idx, src, tgt = [], [], []
        for b, (i, j) in enumerate(indices):
            if i.numel() == 0:
                continue
            order = torch.argsort(j) if self.match_order == "target" else torch.argsort(i)
            b_idx.append(torch.full_like(i, b))
            src.append(i[order])
            tgt.append(j[order] + packed.offsets[b])
        if not b_idx:
            z = torch.zeros(0, dtype=torch.int64)
            return z, z, z
        return torch.cat(b_idx), torch.cat(src), torch.cat(tgt)

    def _mask_point_counts(self):
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        return int(self.num_points * self.oversample_ratio), num_uncertain, self.num_points - num_uncertain

    @staticmethod
    def _class_error(layer, pairs, packed: PackedInstanceTargets) -> Tensor:
        """DETR's ``class_error`` of one prediction (detached scalar, percent)."""
        logits = layer["pred_logits"].detach()
        b_idx, src, tgt = pairs
        if src.numel() == 0:
            return logits.new_tensor(100.0, dtype=torch.float)
        dev = logits.device
        pred = logits[b_idx.to(dev), src.to(dev)].argmax(-1)
        return 100.0 - (pred == packed.labels[tgt.to(dev)]).float().mean() * 100.0

    # ------------------------------------------------------------------ losses of all predictions
    def _losses_batched(
        self, layers, packed: PackedInstanceTargets, num_masks, names, label_flag: Optional[Tensor] = None
    ) -> List[Dict[str, Tensor]]:
        L = len(layers)
        B, Q = layers[0]["pred_logits"].shape[:2]
        device = layers[0]["pred_logits"].device
        want_masks = "masks" in self.losses
        # 1. every random number, in the per-layer loop's order: matcher points, then mask points
        M = sum(min(Q, n) for n in packed.sizes)  # pairs per prediction (rectangular assignment)
        S, n_unc, R = self._mask_point_counts()
        matcher_coords, overs, extras = draw_in_loop_order(self.matcher, L, B, M if want_masks else 0, S, R, device)
        # 2. matching, all predictions at once
        all_indices = self.matcher.match_many(layers, packed, point_coords=matcher_coords, layer_names=names)
        if label_flag is not None and bool(label_flag):
            self._check_labels(packed)  # raises, naming the labels
        pairs = [self._ordered_pairs(ind, packed) for ind in all_indices]
        counts = [int(p[0].numel()) for p in pairs]
        if want_masks and any(c != M for c in counts):
            raise RuntimeError(
                f"SetCriterion: the matcher returned {counts} pairs per prediction, expected {M} "
                "(min(Q, n_b) per image, a full rectangular assignment)"
            )
        values: List[Dict[str, Tensor]] = [{} for _ in range(L)]
        for loss in self.losses:
            if loss == "labels":
                for v, ce in zip(values, self._loss_labels_batched(layers, packed, pairs)):
                    v["loss_ce"] = ce
                values[0]["class_error"] = self._class_error(layers[0], pairs[0], packed)
            else:
                per_layer = matched_mask_losses(
                    [layer["pred_masks"] for layer in layers], packed, pairs, num_masks, overs, extras, n_unc
                )
                for v, lm in zip(values, per_layer):
                    v.update(lm)
        return values

    def _loss_labels_batched(self, layers, packed, pairs) -> List[Tensor]:
        """One cross-entropy call for all predictions; per prediction the weighted mean."""
        L = len(layers)
        logits = torch.stack([layer["pred_logits"] for layer in layers]).float()  # [L, B, Q, K+1]
        _, B, Q, C = logits.shape
        dev = logits.device
        target = torch.full((L, B, Q), self.num_classes, dtype=torch.int64, device=dev)
        l_idx = torch.cat([torch.full_like(p[0], l) for l, p in enumerate(pairs)]).to(dev)
        b_idx = torch.cat([p[0] for p in pairs]).to(dev)
        s_idx = torch.cat([p[1] for p in pairs]).to(dev)
        t_idx = torch.cat([p[2] for p in pairs]).to(dev)
        target[l_idx, b_idx, s_idx] = packed.labels[t_idx]
        weight = self.empty_weight.float()
        nll = F.cross_entropy(logits.reshape(-1, C), target.reshape(-1), weight=weight, reduction="none")
        num = nll.view(L, B * Q).sum(1)
        den = weight[target.view(L, B * Q)].sum(1)
        return list((num / den).unbind(0))
