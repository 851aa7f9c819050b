"""Process-group helpers. Every function is a safe no-op in a single process
(no process group needed); this module and ``segtrain/engine/launch.py`` are the
only places that import ``torch.distributed``."""

import functools
from typing import Any, Dict, List

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "is_dist_initialized",
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "reduce_dict",
    "all_reduce_mean",
    "shared_random_seed",
    "create_local_process_group",
]

_LOCAL_PROCESS_GROUP = None


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def create_local_process_group(num_workers_per_machine: int) -> None:
    """Create the per-machine group; called by ``launch`` on every rank."""
    global _LOCAL_PROCESS_GROUP
    assert _LOCAL_PROCESS_GROUP is None
    num_machines = get_world_size() // num_workers_per_machine
    machine_rank = get_rank() // num_workers_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine))
        pg = dist.new_group(ranks)
        if i == machine_rank:
            _LOCAL_PROCESS_GROUP = pg


def get_local_rank() -> int:
    if not is_dist_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 0
    return dist.get_rank(group=_LOCAL_PROCESS_GROUP)


def get_local_size() -> int:
    if not is_dist_initialized() or _LOCAL_PROCESS_GROUP is None:
        return 1
    return dist.get_world_size(group=_LOCAL_PROCESS_GROUP)


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes; nothing happens in a single process."""
    if get_world_size() == 1:
        return
    if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """A gloo group for gathering picklable objects (NCCL cannot gather Python objects)."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> List[Any]:
    """Gather any picklable object from every rank; returns a list of world-size items."""
    if get_world_size() == 1:
        return [data]
    output = [None for _ in range(get_world_size())]
    dist.all_gather_object(output, data, group=_cpu_group())
    return output


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Gather a picklable object to rank ``dst``; other ranks get ``[]``."""
    if get_world_size() == 1:
        return [data]
    group = _cpu_group()
    if get_rank() == dst:
        output = [None for _ in range(get_world_size())]
        dist.gather_object(data, output, dst=dst, group=group)
        return output
    dist.gather_object(data, None, dst=dst, group=group)
    return []


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over processes (e.g. the ``num_masks`` loss normalizer).
    Returns the input unchanged in a single process; never needs a process group."""
    if get_world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / get_world_size()


def reduce_dict(input_dict: Dict[str, torch.Tensor], average: bool = True) -> Dict[str, torch.Tensor]:
    """Reduce scalar tensors in a dict to rank 0 (for logging); keys sorted for a fixed order."""
    world_size = get_world_size()
    if world_size < 2:
        return input_dict
    with torch.no_grad():
        names = sorted(input_dict)
        values = torch.stack([input_dict[k].detach().float().reshape(()) for k in names])
        dist.reduce(values, dst=0)
        if dist.get_rank() == 0 and average:
            values /= world_size
        return {k: v for k, v in zip(names, values)}


def shared_random_seed() -> int:
    """A random int that is the same on every rank (rank 0's draw)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]
