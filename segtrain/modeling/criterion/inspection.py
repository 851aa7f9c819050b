"""Per-component view of one loss evaluation: raw value, effective weight, weighted value,
share of ``core_loss`` and the gradient norm each component sends into the model.

The effective weight of a component is measured, not looked up: it is
``d core_loss / d component``, which is exactly the weight the criterion applied
(including aux copies, ``o2m_weight`` and batch-size scaling) as long as the criterion
builds ``core_loss`` from the tensors it returns. Components that do not reach
``core_loss`` (metrics, zero weights) get weight 0.
"""

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from tabulate import tabulate

from segtrain.config import get_cfg
from segtrain.config.config import all_keys
from segtrain.modeling.criterion.build import CORE_LOSS_KEY

__all__ = [
    "LossComponent",
    "LossReport",
    "inspect_loss_dict",
    "official_weight_differences",
    "DOMINANT_SHARE",
    "VANISHING_SHARE",
]

logger = logging.getLogger(__name__)

DOMINANT_SHARE = 0.90
VANISHING_SHARE = 0.001

# Config node(s) holding the weights of each built-in criterion, relative to MODEL.CRITERION
_CRITERION_WEIGHT_NODES = {
    "SetCriterion": ["SET_CRITERION"],
    "Sam3LossWrapper": ["SAM3"],
    "MultiStepMultiMasksAndIous": ["MULTISTEP"],
}


@dataclass
class LossComponent:
    key: str
    raw: float
    weight: float
    weighted: float
    share: float
    grad_norm: Optional[float]


@dataclass
class LossReport:
    core_loss: float
    components: List[LossComponent]
    summaries: Dict[str, float] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)

    def table(self) -> str:
        rows = [
            [
                c.key,
                f"{c.raw:.4g}",
                f"{c.weight:g}",
                f"{c.weighted:.4g}",
                f"{100 * c.share:.2f}%",
                "-" if c.grad_norm is None else f"{c.grad_norm:.3e}",
            ]
            for c in self.components
        ]
        rows.append([CORE_LOSS_KEY, "", "", f"{self.core_loss:.4g}", "100.00%", ""])
        for k, v in self.summaries.items():
            rows.append([k, "", "", f"{v:.4g}", f"{100 * v / self.core_loss:.2f}%" if self.core_loss else "", ""])
        return tabulate(
            rows,
            headers=["component", "raw", "weight", "weighted", "share of core_loss", "grad norm into model"],
            tablefmt="github",
        )


def _base_key(key: str) -> str:
    """loss_ce_3 / loss_ce_aux_2 / loss_ce_fs / loss_ce_o2m -> loss_ce."""
    for pat in (r"_aux_\d+$", r"_\d+$", r"_fs$", r"_o2m$"):
        key = re.sub(pat, "", key)
    return re.sub(r"_aux_\d+", "", key)


def inspect_loss_dict(loss_dict: Dict[str, torch.Tensor], params: Optional[List[torch.Tensor]] = None) -> LossReport:
    """Break ``loss_dict[core_loss]`` down by component.

    loss_dict: a criterion's output on one batch, still attached to the graph.
    params: model parameters to measure gradient norms on (None: skip gradients).
    """
    if CORE_LOSS_KEY not in loss_dict:
        raise KeyError(f"the loss dict has no {CORE_LOSS_KEY!r}; keys: {sorted(loss_dict)}")
    core = loss_dict[CORE_LOSS_KEY]
    keys = [
        k
        for k, v in loss_dict.items()
        if k != CORE_LOSS_KEY and not k.startswith(CORE_LOSS_KEY) and torch.is_tensor(v) and v.numel() == 1
    ]
    attached = [k for k in keys if loss_dict[k].requires_grad and core.requires_grad]
    weights = {k: 0.0 for k in keys}
    if attached:
        grads = torch.autograd.grad(core, [loss_dict[k] for k in attached], retain_graph=True, allow_unused=True)
        for k, g in zip(attached, grads):
            weights[k] = 0.0 if g is None else float(g)
    total = float(core.detach())
    params = [p for p in (params or []) if p.requires_grad]
    comps = []
    for k in keys:
        raw = float(loss_dict[k].detach())
        w = weights[k]
        weighted = w * raw
        gn = None
        if params and w != 0.0 and loss_dict[k].requires_grad:
            gs = torch.autograd.grad(loss_dict[k] * w, params, retain_graph=True, allow_unused=True)
            gn = math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in gs if g is not None))
        comps.append(LossComponent(k, raw, w, weighted, weighted / total if total else 0.0, gn))
    report = LossReport(
        total,
        comps,
        {
            k: float(v.detach())
            for k, v in loss_dict.items()
            if k.startswith(CORE_LOSS_KEY) and k != CORE_LOSS_KEY and torch.is_tensor(v)
        },
    )
    for c in comps:
        if c.weight == 0.0:
            continue
        if c.share > DOMINANT_SHARE:
            report.warnings.append(
                f"{c.key} is {100 * c.share:.1f}% of {CORE_LOSS_KEY} (> {100 * DOMINANT_SHARE:.0f}%): "
                "it dominates; check its weight and normalizer"
            )
        elif abs(c.share) < VANISHING_SHARE:
            report.warnings.append(
                f"{c.key} is {100 * c.share:.3f}% of {CORE_LOSS_KEY} (< {100 * VANISHING_SHARE:.1f}%): "
                "it barely contributes"
            )
    return report


# options that rescale the whole loss rather than weight one term
_SCALE_KEYS = ("SCALE_BY_FIND_BATCH_SIZE", "NORMALIZE_BY_STAGE_NUM", "NORMALIZE_BY_VALID_OBJECT_NUM")


def official_weight_differences(cfg) -> List[str]:
    """Warnings for every loss weight / weighting option of the configured criterion that
    differs from the official default (``get_cfg()`` holds the official values)."""
    name = cfg.MODEL.CRITERION.NAME
    nodes = _CRITERION_WEIGHT_NODES.get(name)
    if nodes is None:
        return []
    default = get_cfg()
    out = []
    for node in nodes:
        cur, ref = cfg.MODEL.CRITERION[node], default.MODEL.CRITERION[node]
        for key in all_keys(ref):
            leaf = key.rsplit(".", 1)[-1]
            if (
                "WEIGHT" not in key
                and not leaf.startswith("loss_")
                and leaf != "presence_loss"
                and leaf not in _SCALE_KEYS
            ):
                continue
            a, b = cur, ref
            for part in key.split("."):
                a, b = a[part], b[part]
            if a != b:
                out.append(f"MODEL.CRITERION.{node}.{key} = {a} differs from the official {name} default {b}")
    return out
