"""Optimizer over the parameter groups, gradient clipping, frozen modules, parameter counts."""

import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
from tabulate import tabulate
from torch import nn

from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import closest_matches

from .param_groups import get_default_optimizer_params, layer_decay_from_config, lr_multipliers_from_config

__all__ = [
    "build_optimizer",
    "adam_impl_kwargs",
    "get_default_optimizer_params",
    "build_gradient_clipper",
    "make_gradient_clipper",
    "freeze_modules",
    "count_parameters",
    "log_parameter_counts",
    "OPTIMIZERS",
    "CLIP_TYPES",
]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("AdamW", "Adam", "SGD")
CLIP_TYPES = ("value", "norm", "full_model")


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over the groups of ``get_default_optimizer_params`` (``param_groups``);
    logs a table of each group's LR, weight decay and parameter count."""
    name = cfg.SOLVER.OPTIMIZER
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        weight_decay_embed=cfg.SOLVER.WEIGHT_DECAY_EMBED,
        backbone_multiplier=cfg.SOLVER.BACKBONE_MULTIPLIER,
        lr_multipliers=lr_multipliers_from_config(cfg),
        layer_decay=layer_decay_from_config(cfg),
        no_weight_decay_names=list(cfg.SOLVER.NO_WEIGHT_DECAY_NAMES),
        weight_decay_norm_types=list(cfg.SOLVER.WEIGHT_DECAY_NORM_TYPES),
    )
    if not groups:
        raise ConfigError("no trainable parameters: every parameter is frozen (check MODEL.FROZEN_MODULES)")
    rows = [
        (g["name"], f"{g['lr']:.3g}", f"{g['weight_decay']:.3g}", len(g["params"]), sum(p.numel() for p in g["params"]))
        for g in groups
    ]
    logger.info(
        f"{name} parameter groups:\n" + tabulate(rows, headers=["group", "lr", "weight_decay", "tensors", "params"])
    )
    for g in groups:
        del g["param_names"]
    if name == "AdamW":
        return torch.optim.AdamW(
            groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), **adam_impl_kwargs(groups)
        )
    if name == "Adam":
        return torch.optim.Adam(
            groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), **adam_impl_kwargs(groups)
        )
    if name == "SGD":
        return torch.optim.SGD(
            groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
        )
    raise ConfigError(f"SOLVER.OPTIMIZER: unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def adam_impl_kwargs(groups: Iterable[Dict]) -> Dict[str, bool]:
    """``{"fused": True}`` when the installed torch has a fused Adam/AdamW kernel for every
    parameter's device and dtype (CPU included since torch 2.4), else ``{}`` (torch's default).

    The fused kernel updates every tensor in one call instead of ~10 elementwise ops per
    tensor (the official R50 model has ~450 parameter tensors); the update is the same
    formula, equal to the per-tensor loop up to float round-off (tests/solver). CPU
    ``foreach`` is not used: there it falls back to per-tensor ops and measured slower."""
    params = [p for g in groups for p in g["params"]]
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices  # noqa: PLC0415 (private API)

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # torch < 2.4: no CPU kernel, and no such helper
        return {}
    ok = bool(params) and all(p.device.type in devices and p.is_floating_point() and not p.is_sparse for p in params)
    return {"fused": True} if ok else {}


def build_gradient_clipper(cfg) -> Optional[Callable[[Iterable[torch.Tensor]], Optional[torch.Tensor]]]:
    """``clip(params) -> total norm or None`` from ``SOLVER.CLIP_GRADIENTS``, or None when disabled.

    "value": clamp every gradient element to ``[-CLIP_VALUE, CLIP_VALUE]``;
    "norm": rescale each parameter's gradient to norm <= ``CLIP_VALUE`` separately;
    "full_model": rescale all gradients together so their joint norm is <= ``CLIP_VALUE``.
    """
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    return make_gradient_clipper(c.CLIP_TYPE, c.CLIP_VALUE, c.NORM_TYPE)


def make_gradient_clipper(clip_type: str, clip_value: float, norm_type: float = 2.0):
    """The clipper of ``build_gradient_clipper`` from plain values."""
    if clip_type not in CLIP_TYPES:
        raise ConfigError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE: unknown type {clip_type!r}; valid: {', '.join(CLIP_TYPES)}"
        )

    def clip(params: Iterable[torch.Tensor]) -> Optional[torch.Tensor]:
        params = [p for p in params if p.grad is not None]
        if clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, clip_value)
            return None
        if clip_type == "norm":
            for p in params:
                torch.nn.utils.clip_grad_norm_([p], clip_value, norm_type)
            return None
        return torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)

    clip.clip_type = clip_type
    return clip


def freeze_modules(model: nn.Module, prefixes: Sequence[str]) -> List[str]:
    """Set ``requires_grad=False`` on every parameter named ``prefix`` or under ``prefix.``.
    A prefix that matches no parameter is a ``ConfigError`` naming it. Returns the frozen names."""
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for prefix in prefixes:
        prefix = prefix.rstrip(".")
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            modules = sorted({n.rsplit(".", 1)[0] for n in names if "." in n})
            close = closest_matches(prefix, modules)
            hint = f" Closest module names: {', '.join(close)}" if close else ""
            raise ConfigError(f"MODEL.FROZEN_MODULES: {prefix!r} matches no parameter of the model.{hint}")
        frozen += hits
    frozen_set = set(frozen)
    for n, p in model.named_parameters():
        if n in frozen_set:
            p.requires_grad_(False)
    if frozen:
        logger.info(f"Froze {len(frozen_set)} parameter tensors under {list(prefixes)}")
    return sorted(frozen_set)


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """``{"total": ..., "trainable": ...}`` numbers of scalar parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def log_parameter_counts(model: nn.Module) -> Dict[str, int]:
    """Log total / trainable parameter counts (overall and per top-level module); returns the totals."""
    counts = count_parameters(model)
    rows = []
    for name, child in model.named_children():
        c = count_parameters(child)
        if c["total"]:
            rows.append((name, f"{c['total']:,}", f"{c['trainable']:,}"))
    rows.append(("total", f"{counts['total']:,}", f"{counts['trainable']:,}"))
    logger.info("Parameters:\n" + tabulate(rows, headers=["module", "total", "trainable"]))
    return counts
