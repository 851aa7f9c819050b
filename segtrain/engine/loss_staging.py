"""One step's losses staged on their device and read by the host once (``SimpleTrainer.run_step``)."""

import logging
import math
from typing import Any, Mapping, Optional

import torch

from segtrain.modeling.criterion.build import CORE_LOSS_KEY
from segtrain.utils import comm

__all__ = ["StagedLosses", "HostLosses"]

logger = logging.getLogger(__name__)


class HostLosses:
    """The host copy of one step's staged values: ``local`` (this process's losses, in
    ``loss_dict`` order), ``mean`` (averaged over processes), ``data_time``, ``any_bad``
    (a loss is non-finite on some process) and ``grad_norm`` (float or None)."""

    __slots__ = ("local", "mean", "data_time", "any_bad", "grad_norm")

    def __init__(self, local, mean, data_time, any_bad, grad_norm):
        self.local, self.mean, self.data_time, self.any_bad, self.grad_norm = local, mean, data_time, any_bad, grad_norm


class StagedLosses:
    """One step's losses stacked on their device, read by the host once (:meth:`read`).

    Layout of the device vector: n loss values, then (several processes only) the data time
    and the count of non-finite losses, averaged over processes with one ``all_reduce``
    next to the local values. Built with device kernels only (a Python number becomes a
    fill kernel, not a host -> device copy), so staging never waits for the device.
    """

    def __init__(self, loss_dict: Mapping[str, Any], data_time: float):
        self.core = loss_dict[CORE_LOSS_KEY]
        self.names = list(loss_dict)
        self.data_time = float(data_time)
        device = self.core.device if isinstance(self.core, torch.Tensor) else torch.device("cpu")
        with torch.no_grad():
            values = torch.stack(
                [
                    v.detach().to(device).float().reshape(-1).sum()
                    if isinstance(v, torch.Tensor)
                    else torch.full((), float(v), device=device)
                    for v in loss_dict.values()
                ]
            )
            self.world = comm.get_world_size()
            if self.world > 1:
                extra = torch.stack(
                    [torch.full((), self.data_time, device=device), (~torch.isfinite(values)).sum().float()]
                )
                mean = comm.all_reduce_mean(torch.cat([values, extra]))
                values = torch.cat([values, mean])
        self.values = values

    def read(self, grad_norm: Optional[torch.Tensor] = None) -> HostLosses:
        """Copy the staged values (and ``grad_norm``) to the host in one transfer."""
        n = len(self.names)
        vec = self.values
        if grad_norm is not None:
            vec = torch.cat([vec, torch.as_tensor(grad_norm, device=vec.device).detach().float().reshape(1)])
        flat = vec.tolist()  # the one device -> host read (a no-op copy on the CPU)
        local = flat[:n]
        norm = flat[-1] if grad_norm is not None else None
        if self.world > 1:
            mean, data_time, bad_count = flat[n : 2 * n], flat[2 * n], flat[2 * n + 1]
            any_bad = bad_count != 0 or not all(math.isfinite(v) for v in local)
        else:
            mean, data_time = local, self.data_time
            any_bad = not all(math.isfinite(v) for v in local)
        return HostLosses(local, mean, data_time, any_bad, norm)
