"""Normalization layers: ``FrozenBatchNorm2d`` and ``get_norm`` (name -> norm module)."""

import logging
from typing import Callable, Union

import torch
from torch import nn

from segtrain.utils import comm
from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import format_suggestions

__all__ = ["FrozenBatchNorm2d", "get_norm", "NORM_NAMES"]

logger = logging.getLogger(__name__)

# Valid ``norm`` names for ``get_norm`` ("" = no norm).
NORM_NAMES = ("BN", "SyncBN", "FrozenBN", "GN", "")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed affine parameters and statistics (all four are buffers).

    Computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``, i.e. exactly
    an eval-mode ``nn.BatchNorm2d``, whatever the module's train/eval mode. Loads BN
    checkpoints: ``num_batches_tracked`` is dropped and missing running stats default to
    (0, 1). Input [B, C, H, W] -> [B, C, H, W].
    """

    _version = 3

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fold the four buffers into one scale and shift: two elementwise ops on x, and no
        # stored BN intermediates for backward.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).reshape(1, -1, 1, 1) + shift.to(x.dtype).reshape(1, -1, 1, 1)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A BN checkpoint carries num_batches_tracked, which means nothing once frozen.
        state_dict.pop(prefix + "num_batches_tracked", None)
        # Old Caffe2-converted checkpoints have no running stats: identity statistics.
        if prefix + "running_mean" not in state_dict and prefix + "weight" in state_dict:
            state_dict[prefix + "running_mean"] = torch.zeros_like(self.running_mean)
        if prefix + "running_var" not in state_dict and prefix + "weight" in state_dict:
            state_dict[prefix + "running_var"] = torch.ones_like(self.running_var)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` in ``module`` by a frozen copy.

        Children are replaced in place; the return value is the converted module (a new
        object when ``module`` itself is a BN layer).
        """
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            res = cls(module.num_features, eps=module.eps)
            with torch.no_grad():
                if module.affine:
                    res.weight.copy_(module.weight.detach())
                    res.bias.copy_(module.bias.detach())
                if module.track_running_stats:
                    res.running_mean.copy_(module.running_mean)
                    res.running_var.copy_(module.running_var)
            return res.to(device=module.running_mean.device if module.running_mean is not None else None)
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


_SYNC_BN_FALLBACK_LOGGED = False


def get_norm(norm: Union[str, Callable[[int], nn.Module], None], out_channels: int) -> Union[nn.Module, None]:
    """A norm layer for ``out_channels`` channels, or ``None`` for ``""`` / ``None``.

    ``norm``: "BN", "SyncBN" (plain BN in a single process), "FrozenBN", "GN" (32
    groups), "" / None, or a callable ``channels -> nn.Module``.
    """
    global _SYNC_BN_FALLBACK_LOGGED
    if norm is None:
        return None
    if callable(norm) and not isinstance(norm, str):
        return norm(out_channels)
    if norm == "":
        return None
    if norm == "BN":
        return nn.BatchNorm2d(out_channels)
    if norm == "SyncBN":
        if comm.get_world_size() > 1:
            return nn.SyncBatchNorm(out_channels)
        # SyncBatchNorm needs a process group even to run; in one process it equals BN.
        if not _SYNC_BN_FALLBACK_LOGGED:
            logger.info("norm 'SyncBN' in a single process: using BatchNorm2d")
            _SYNC_BN_FALLBACK_LOGGED = True
        return nn.BatchNorm2d(out_channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(out_channels)
    if norm == "GN":
        if out_channels % 32 != 0:
            raise ConfigError(f"norm 'GN' uses 32 groups; {out_channels} channels is not a multiple of 32")
        return nn.GroupNorm(32, out_channels)
    raise ConfigError(
        f"unknown norm {norm!r}.{format_suggestions(str(norm), NORM_NAMES[:-1])} "
        f"Valid: {', '.join(repr(n) for n in NORM_NAMES)}"
    )
