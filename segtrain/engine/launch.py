"""``launch``: run ``main_func`` in one process, or in one process per GPU (per CPU worker
when there is no GPU) with a torch.distributed process group (NCCL on CUDA, Gloo on CPU).
Under ``torchrun`` (its ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` /
``MASTER_ADDR`` / ``MASTER_PORT`` environment) the process is already one worker: it joins
the group through ``env://`` instead of spawning.

Before it spawns workers, the launcher measures the CPU cores free of other work once
(``SEGTRAIN_FREE_CPUS``, :mod:`segtrain.utils.cpu_share`), so that every worker divides the
same figure by the number of workers instead of each running a thread per core (or counting
its starting siblings as load)."""

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segtrain.utils import comm, cpu_share
from segtrain.utils.errors import ConfigError

__all__ = ["launch", "torchrun_env", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("", 0))
    port = sock.getsockname()[1]
    sock.close()
    # the port may be taken again before the workers bind it; the window is small
    return port


_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> Optional[Dict[str, int]]:
    """``{"rank", "world_size", "local_rank", "local_world_size"}`` when this process was started
    by ``torchrun`` (or anything that sets its variables, e.g. a SLURM script), else None."""
    if not all(k in os.environ for k in _TORCHRUN_VARS):
        return None
    try:
        env = {
            "rank": int(os.environ["RANK"]),
            "world_size": int(os.environ["WORLD_SIZE"]),
            "local_rank": int(os.environ["LOCAL_RANK"]),
        }
        env["local_world_size"] = int(os.environ.get("LOCAL_WORLD_SIZE", env["world_size"]))
    except ValueError as e:
        raise ConfigError(f"torchrun environment: a rank variable is not an integer ({e})") from None
    return env


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence[Any] = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """Call ``main_func(*args)`` on ``num_machines * num_gpus_per_machine`` processes.

    World size 1: a plain call in this process (no process group), returning its result.
    Otherwise spawns ``num_gpus_per_machine`` workers here; ``dist_url`` is "tcp://host:port"
    of machine 0 (None / "auto": a free localhost port, single machine only).
    Started by ``torchrun`` with ``WORLD_SIZE`` > 1: this process joins the group from the
    environment (``env://``) and runs ``main_func`` itself; the other arguments are ignored.
    """
    env = torchrun_env()
    if env is not None and env["world_size"] > 1:
        if (num_machines, num_gpus_per_machine) != (1, 1):
            logger.warning(
                f"started by torchrun (world size {env['world_size']}): --num-gpus {num_gpus_per_machine}"
                f" / --num-machines {num_machines} are ignored; torchrun's --nproc-per-node and --nnodes"
                f" decide"
            )
        return _torchrun_worker(env, main_func, tuple(args), timeout)
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
    cpu_share.publish_free_cpus()  # inherited by the workers (nothing measured when already known)
    mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )


def _torchrun_worker(env: Dict[str, int], main_func: Callable, args: Sequence[Any], timeout: timedelta) -> Any:
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        torch.cuda.set_device(env["local_rank"])
    dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method="env://", timeout=timeout)
    try:
        comm.create_local_process_group(env["local_world_size"])
        comm.synchronize()
        result = main_func(*args)
        comm.synchronize()  # no rank tears its connections down while another still uses them
        return result
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _distributed_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_gpus_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Sequence[Any],
    timeout: timedelta,
) -> None:
    has_gpu = torch.cuda.is_available()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="nccl" if has_gpu else "gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error(f"Process group URL: {dist_url}")
        raise
    try:
        comm.create_local_process_group(num_gpus_per_machine)
        if has_gpu:
            torch.cuda.set_device(local_rank)
        comm.synchronize()
        main_func(*args)
        # every rank done before any destroys its group: a two-rank Gloo run ended, rarely, with a
        # SIGABRT ("terminate called without an active exception") after one rank had exited
        comm.synchronize()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
