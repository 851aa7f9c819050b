"""Entry-script helpers: argument parser, config loading, CPU threads, run setup, default event
writers, ``run_cli``."""

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any, Callable, List, Optional

import torch
import yaml
from torch.multiprocessing import ProcessExitedException

from segtrain.checkpoint import atomic_write_bytes
from segtrain.config import load_config
from segtrain.utils import comm, cpu_share
from segtrain.utils.env import collect_env_info, seed_all_rng, setup_determinism
from segtrain.utils.errors import ConfigError, SegtrainError
from segtrain.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter, WandbWriter
from segtrain.utils.free_core_monitor import FreeCoreMonitor
from segtrain.utils.logger import setup_logger

from .epochs import apply_max_epochs
from .hooks import CallbackHook
from .launch import launch

__all__ = [
    "default_argument_parser",
    "setup_cfg",
    "configure_cpu_threads",
    "follow_free_cores",
    "default_setup",
    "default_writers",
    "run_cli",
]

logger = logging.getLogger(__name__)


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """Arguments shared by the training / evaluation entry scripts."""
    parser = argparse.ArgumentParser(
        epilog=epilog or "Example: train_net.py --config-file projects/m2f/r50.yaml SOLVER.MAX_ITER 100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the config YAML")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint in OUTPUT_DIR (model, optimizer, schedule, "
        "iteration, data position); without it MODEL.WEIGHTS initializes the model only",
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS and exit")
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes per machine (GPUs; CPU processes with Gloo when there is no GPU)",
    )
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0 .. num-machines-1)")
    parser.add_argument(
        "--dist-url", default="auto", help="tcp://host:port of machine 0; 'auto' picks a free local port (one machine)"
    )
    parser.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="MODULE",
        help="user module (dotted name or .py path) imported first so its components register; repeatable",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of user errors")
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs at the end, e.g. SOLVER.BASE_LR 0.001",
    )
    return parser


def setup_cfg(args: argparse.Namespace):
    """Defaults + user modules + ``--config-file`` + command-line overrides, frozen.
    A run always names its config: a missing ``--config-file`` is a one-line error."""
    if not args.config_file:
        raise ConfigError("no --config-file given (e.g. --config-file projects/m2f/r50.yaml)")
    cfg = load_config(args.config_file or None, args.opts or [], getattr(args, "module", []) or [])
    cfg.freeze()
    return apply_max_epochs(cfg)


def configure_cpu_threads(cfg) -> cpu_share.ThreadPlan:
    """Set this process's torch compute threads: ``CPU.NUM_THREADS``, else the environment
    (``SEGTRAIN_NUM_THREADS``, ``OMP_NUM_THREADS``), else the cores free at start-up divided
    among this machine's processes (:mod:`segtrain.utils.cpu_share`; the figure the launcher
    published, measured here when none was). Returns the plan; its ``describe()`` is the
    start-up log line, with the OpenMP wait policy in effect."""
    cpu_share.publish_free_cpus()
    plan = cpu_share.plan_threads(int(cfg.CPU.NUM_THREADS), comm.get_local_size())
    torch.set_num_threads(plan.threads)
    wait = cpu_share.prepare_openmp_env()  # torch is loaded: reports the policy, changes nothing
    return dataclasses.replace(plan, wait_policy=f"{wait['wait_policy']} ({wait['source']})")


def follow_free_cores(trainer, plan: cpu_share.ThreadPlan, period_s: float) -> Optional[FreeCoreMonitor]:
    """Re-measure the free cores every ``period_s`` seconds of training (after a step) and
    change the thread count with them (:class:`FreeCoreMonitor`), when the free cores decided
    ``plan`` and ``period_s`` > 0. Returns the monitor, or None when nothing is followed."""
    if period_s <= 0:
        return None
    monitor = FreeCoreMonitor(plan, torch.set_num_threads, period_s=period_s)
    if not monitor.enabled:
        return None
    trainer.register_hooks([CallbackHook(after_step=lambda _: monitor.poll())])
    return monitor


def default_setup(cfg, args: argparse.Namespace, cpu_threads: Optional[str] = None) -> None:
    """Output folder, loggers (console + ``log.txt``), environment / arguments / config in the
    log, ``OUTPUT_DIR/config.yaml``, per-rank seed and determinism settings. ``cpu_threads``:
    the description of :func:`configure_cpu_threads`' plan, logged with the environment."""
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    log = setup_logger(output_dir, distributed_rank=rank)
    log.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    log.info("Environment info:\n" + collect_env_info())
    if cpu_threads:
        log.info(cpu_threads)
    log.info(f"Command line arguments: {args}")
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file) as f:
            log.info(f"Contents of {config_file}:\n{f.read()}")
    log.info("Running with full config:\n" + cfg.dump())
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        atomic_write_bytes(path, cfg.dump().encode())
        log.info(f"Full config saved to {path}")
    # a different stream per rank; SEED < 0 draws (and logs) a fresh one
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    log.info(f"Random seed of rank {rank}: {seed}")
    setup_determinism(cfg.DETERMINISTIC, cfg.CUDNN_BENCHMARK and not getattr(args, "eval_only", False))


def default_writers(cfg, max_iter: int) -> List[EventWriter]:
    """Console line, ``OUTPUT_DIR/metrics.json``, TensorBoard (``WRITERS.TENSORBOARD``) and
    W&B (``WRITERS.WANDB.ENABLED``). Main process only: one metrics file per run."""
    writers: List[EventWriter] = [
        CommonMetricPrinter(max_iter, train_prefix=cfg.WRITERS.TRAIN_PREFIX),
        JSONWriter(os.path.join(cfg.OUTPUT_DIR, "metrics.json")),
    ]
    if cfg.WRITERS.TENSORBOARD:
        writers.append(TensorboardXWriter(cfg.OUTPUT_DIR))
    if cfg.WRITERS.WANDB.ENABLED:
        writers.append(
            WandbWriter(
                project=cfg.WRITERS.WANDB.PROJECT,
                mode=cfg.WRITERS.WANDB.MODE,
                output_dir=cfg.OUTPUT_DIR,
                config=yaml.safe_load(cfg.dump()),
            )
        )
    return writers


class _CliWorker:
    """Runs ``main(args)`` turning a ``SegtrainError`` into one ``error: ...`` line on stderr
    and exit code 2 (130 on interruption). Picklable, so it runs in spawned workers too."""

    def __init__(self, main: Callable, debug: bool):
        self.main = main
        self.debug = debug

    def _report(self, msg: str) -> None:
        prefix = f"error (rank {comm.get_rank()})" if comm.get_world_size() > 1 else "error"
        print(f"{prefix}: {msg}", file=sys.stderr, flush=True)

    def __call__(self, args) -> int:
        try:
            self.main(args)
            code = 0
        except SegtrainError as e:
            if self.debug:
                raise
            logging.getLogger("segtrain").debug("user error", exc_info=True)  # the full trace in log.txt
            # an error listing several problems (start-up validation) gives one line per problem
            for line in getattr(e, "problems", None) or [str(e).splitlines()[0] if str(e) else type(e).__name__]:
                self._report(line)
            code = 2
        except KeyboardInterrupt as e:
            if self.debug:
                raise
            self._report(str(e) or "interrupted")
            code = 130
        if code and comm.get_world_size() > 1:
            sys.exit(code)  # a spawned worker reports through its exit code
        return code


def run_cli(main: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> int:
    """Run ``main(args)`` in ``args.num_gpus * args.num_machines`` processes (``launch``) and
    return the exit code: 0, 2 after a user error (one ``error: <message>`` line on stderr,
    no traceback unless ``--debug``), 130 after an interruption."""
    worker = _CliWorker(main, bool(getattr(args, "debug", False)))
    try:
        code = launch(
            worker,
            getattr(args, "num_gpus", 1),
            num_machines=getattr(args, "num_machines", 1),
            machine_rank=getattr(args, "machine_rank", 0),
            dist_url=getattr(args, "dist_url", "auto"),
            args=(args,),
        )
    except ProcessExitedException as e:
        return int(e.exit_code or 1)  # the worker already printed its error
    except SegtrainError as e:  # raised by launch itself (bad --num-gpus / --dist-url)
        if worker.debug:
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return int(code or 0)
