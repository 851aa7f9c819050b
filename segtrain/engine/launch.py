"""``launch``: run ``main_func`` in one process, or in one process per GPU (per CPU worker
when there is no GPU) with a torch.distributed process group (NCCL on CUDA, Gloo on CPU)."""
import logging
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segtrain.utils import comm
from segtrain.utils.errors import ConfigError

__all__ = ["launch", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("", 0))
    port = sock.getsockname()[1]
    sock.close()
    # the port may be taken again before the workers bind it; the window is small
    return port


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1, machine_rank: int = 0,
           dist_url: Optional[str] = None, args: Sequence[Any] = (), timeout: timedelta = DEFAULT_TIMEOUT):
    """Call ``main_func(*args)`` on ``num_machines * num_gpus_per_machine`` processes.

    World size 1: a plain call in this process (no process group), returning its result.
    Otherwise spawns ``num_gpus_per_machine`` workers here; ``dist_url`` is "tcp://host:port"
    of machine 0 (None / "auto": a free localhost port, single machine only).
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        return main_func(*args)
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ConfigError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible")
    if dist_url in (None, "", "auto"):
        if num_machines != 1:
            raise ConfigError("--dist-url auto works on one machine only; give tcp://<machine 0 host>:<port>")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if not 0 <= machine_rank < num_machines:
        raise ConfigError(f"--machine-rank {machine_rank} is not in [0, {num_machines})")
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _distributed_worker(local_rank: int, main_func: Callable, world_size: int, num_gpus_per_machine: int,
                        machine_rank: int, dist_url: str, args: Sequence[Any], timeout: timedelta) -> None:
    has_gpu = torch.cuda.is_available()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method=dist_url,
                                world_size=world_size, rank=global_rank, timeout=timeout)
    except Exception:
        logger.error(f"Process group URL: {dist_url}")
        raise
    try:
        comm.create_local_process_group(num_gpus_per_machine)
        if has_gpu:
            torch.cuda.set_device(local_rank)
        comm.synchronize()
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
