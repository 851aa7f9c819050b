"""``benchmark.py contention``: the main job's training step and evaluation time per image,
alone and beside N busy single-thread processes (``--busy 0,1,2``) that the benchmark starts
before each measurement and stops after it.

Variants (``--variants``):

* ``segtrain``: the step as ``tools/train_net.py`` runs it -- ``DefaultTrainer`` with its
  hooks, its training loader (``DATALOADER.NUM_WORKERS`` worker processes) and the criterion;
  evaluation is ``inference_on_dataset`` with the config's evaluator on the first
  ``--eval-images`` images of ``DATASETS.TEST[0]`` through the test loader;
* ``plain``: the same model as plain PyTorch -- forward, backward of ``core_loss``, gradient
  clipping and optimizer step on batches fetched beforehand (no trainer, hooks or loader), and
  the model's eval-mode forward on pre-mapped images (no loader, no evaluator).

Thread policies (``--policies``): ``adaptive`` does what ``tools/train_net.py`` does
(``segtrain.utils.cpu_share``: the cores free when the process starts, divided among its
processes, the OpenMP wait policy chosen before torch loads, and for ``segtrain`` the count
re-measured during training); ``all-cores`` is torch's default (a thread per usable CPU,
libgomp's wait policy), i.e. the behaviour without it (``--threads N`` fixes N instead). Each
(variant, policy, busy level) is a fresh process started after the busy ones, as a job started
on a busy machine; ``SEGTRAIN_FREE_CPUS`` is removed from its environment so that it measures
for itself. Other settings (``OMP_NUM_THREADS``, ``SEGTRAIN_NUM_THREADS``) pass through.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from . import timing

__all__ = ["BUSY_LOOP", "POLICIES", "VARIANTS", "add_parser", "run"]

VARIANTS = ("segtrain", "plain")
POLICIES = ("adaptive", "all-cores")
#: the busy neighbour: one single-thread Python process spinning
BUSY_LOOP = "while True: pass"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "contention",
        help="training step and evaluation per image alone and beside N busy processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=0, warmup=2, repeat=5)
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--busy", default="0,1,2", help="comma-separated numbers of busy single-thread processes")
    p.add_argument("--variants", default="segtrain,plain", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--policies", default="adaptive,all-cores", help=f"comma-separated subset of {', '.join(POLICIES)}")
    p.add_argument("--eval-images", type=int, default=6, help="images of DATASETS.TEST[0] evaluated (0: none)")
    p.add_argument("--eval-passes", type=int, default=2, help="timed evaluation passes (segtrain; median quoted)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between starting the busy processes and the job")
    p.add_argument("--case-timeout", type=float, default=1200.0, help="seconds one case may take (else an error)")
    p.add_argument("--_policy", default="adaptive", help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------- one case
def _case_cfg(args, output_dir: str):
    cfg = timing.load_cfg(args)
    cfg.defrost()
    cfg.MODEL.DEVICE = args.device
    cfg.OUTPUT_DIR = output_dir
    cfg.SOLVER.MAX_ITER = args.warmup + args.repeat
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9  # timed steps only; the main job checkpoints rarely
    cfg.TEST.EVAL_PERIOD = 0  # evaluation is timed on its own
    cfg.freeze()
    return cfg


def _segtrain_case(args, cfg, plan) -> Dict[str, List[float]]:
    """Per-iteration wall times of ``DefaultTrainer.train`` (a hook marks each iteration's end;
    with ``plan``, the thread count follows the free cores as in ``tools/train_net.py``) and
    the evaluation time per image of ``inference_on_dataset``."""
    from segtrain.data import DatasetCatalog, build_mapper, build_test_loader, register_shapes_from_cfg
    from segtrain.engine import DefaultTrainer, HookBase
    from segtrain.engine.cli import follow_free_cores
    from segtrain.evaluation.evaluator import inference_on_dataset

    ends: List[float] = []

    class _MarkIterations(HookBase):
        def before_train(self):
            ends.append(time.perf_counter())

        def after_step(self):
            ends.append(time.perf_counter())

    trainer = DefaultTrainer(cfg)
    if plan is not None:
        follow_free_cores(trainer, plan, cfg.CPU.REMEASURE_PERIOD)
    trainer.resume_or_load(resume=False)
    trainer.register_hooks([_MarkIterations()])
    trainer.train()
    steps = [b - a for a, b in zip(ends, ends[1:])][args.warmup :]
    evals: List[float] = []
    if args.eval_images > 0:
        register_shapes_from_cfg(cfg)
        name = cfg.DATASETS.TEST[0]
        dicts = DatasetCatalog.get(name)
        mapper = build_mapper(cfg, is_train=False)
        # one image to warm up, then timed passes over the images (loader, model, evaluator)
        for k, n in enumerate([1] + [args.eval_images] * args.eval_passes):
            loader = build_test_loader(dicts[:n], mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
            evaluator = DefaultTrainer.build_evaluator(cfg, name)
            t0 = time.perf_counter()
            inference_on_dataset(trainer.model, loader, evaluator)
            if k:
                evals.append((time.perf_counter() - t0) / n)
    return {"step_s": steps, "eval_s_per_image": evals}


def _plain_case(args, cfg, plan) -> Dict[str, List[float]]:
    """The model's step and eval-mode forward in a plain loop on data prepared beforehand."""
    import torch

    from segtrain.data import DatasetCatalog, build_mapper, register_shapes_from_cfg

    from .train import _train_step, train_batches, train_variant

    device = torch.device(args.device)
    batches, _ = train_batches(args, device, 2)
    model, opt, clip = train_variant(args, device, "segtrain", batches)
    step = _train_step(model, opt, clip, batches, device, breakdown=False)
    steps = []
    for i in range(args.warmup + args.repeat):
        t0 = time.perf_counter()
        step()
        if i >= args.warmup:
            steps.append(time.perf_counter() - t0)
    evals: List[float] = []
    if args.eval_images > 0:
        register_shapes_from_cfg(cfg)
        mapper = build_mapper(cfg, is_train=False)
        images = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TEST[0])[: args.eval_images]]
        model.eval()
        with torch.no_grad():
            model([images[0]])
            for x in images:
                t0 = time.perf_counter()
                model([x])
                evals.append(time.perf_counter() - t0)
    return {"step_s": steps, "eval_s_per_image": evals}


def _run_case(args) -> Dict:
    """Worker mode: one variant under ``--_policy`` in this fresh process; torch is not loaded yet."""
    from segtrain.utils import cpu_share
    from segtrain.utils.allocator import tune_malloc

    tune_malloc()  # as tools/train_net.py
    wait = {"wait_policy": "libgomp default", "source": "all-cores policy"}
    if args._policy == "adaptive":  # as tools/train_net.py starts
        cpu_share.publish_free_cpus()
        wait = cpu_share.prepare_openmp_env()

    import torch

    from segtrain.engine.cli import configure_cpu_threads

    with tempfile.TemporaryDirectory(prefix="segtrain_contention_") as out:
        cfg = _case_cfg(args, out)
        plan = configure_cpu_threads(cfg) if args._policy == "adaptive" else None
        if plan is None and args.threads > 0:
            torch.set_num_threads(args.threads)
        threads = torch.get_num_threads()
        torch.manual_seed(args.seed)
        times = (_segtrain_case if args._case == "segtrain" else _plain_case)(args, cfg, plan)
    return {
        "case": args._case,
        "policy": args._policy,
        "threads": threads,
        "threads_at_end": torch.get_num_threads(),
        "free_cpus": cpu_share.read_free_cpus(),
        "wait_policy": wait["wait_policy"],
        "loader_workers": cfg.DATALOADER.NUM_WORKERS if args._case == "segtrain" else 0,
        **times,
    }


# ---------------------------------------------------------------------------------- the table
def _start_busy(n: int) -> List[subprocess.Popen]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], env=env) for _ in range(n)]


def _stop(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _child(variant: str, policy: str, args) -> Dict:
    cmd = [sys.executable, timing.BENCHMARK_SCRIPT, "contention", "--_case", variant, "--_policy", policy]
    env = {k: v for k, v in os.environ.items() if k not in ("SEGTRAIN_FREE_CPUS", "SEGTRAIN_OMP_WAIT_POLICY_SET_BY")}
    try:
        proc = subprocess.run(cmd + args._argv, capture_output=True, text=True, env=env, timeout=args.case_timeout)
    except subprocess.TimeoutExpired:  # subprocess.run kills the case; its loader workers exit with it
        return {"case": variant, "policy": policy, "error": f"over --case-timeout {args.case_timeout:.0f} s"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = " ".join((proc.stderr or "").strip().splitlines()[-1:])
    return {"case": variant, "policy": policy, "error": f"subprocess exited {proc.returncode}: {err}"[:300]}


def _median(values) -> float:
    return statistics.median(values) if values else float("nan")


def _rows(results: List[Dict], levels: List[int]):
    """Table rows and summary: per (variant, policy) the medians at each busy level and their
    ratios to the level 0 (alone) figure."""
    rows, summary = [], {}
    keys = sorted({(r["case"], r["policy"]) for r in results}, key=lambda k: (VARIANTS.index(k[0]), k[1]))
    for variant, policy in keys:
        at = {r["busy"]: r for r in results if (r["case"], r["policy"]) == (variant, policy)}
        for what, label in (("step_s", "step ms"), ("eval_s_per_image", "eval ms/image")):
            med = {n: _median(at[n].get(what, [])) if n in at and "error" not in at[n] else None for n in levels}
            base = med.get(0)
            row = [variant, policy, label, "/".join(str(at[n].get("threads", "-")) if n in at else "-" for n in levels)]
            for n in levels:
                row.append(None if med[n] is None else 1000 * med[n])
            for n in levels:
                if n == 0:
                    continue
                ratio = med[n] / base if base and med[n] is not None else None
                row.append("-" if ratio is None else f"{ratio:.2f}x")
                if ratio is not None:
                    summary[f"{variant}_{policy}_{what}_ratio_beside_{n}"] = ratio
            rows.append(row)
    return rows, summary


def run(args) -> int:
    if args._case:
        print(json.dumps(_run_case(args)))
        return 0
    variants = timing.parse_choices(args.variants, VARIANTS, "variant")
    policies = timing.parse_choices(args.policies, POLICIES, "policy")
    if variants is None or policies is None:
        return 2
    try:
        levels = sorted({int(n) for n in args.busy.split(",") if n.strip()})
    except ValueError:
        print(f"error: --busy {args.busy!r}: expected comma-separated integers, e.g. 0,1,2", file=sys.stderr)
        return 2
    machine = timing.machine_info()
    results = []
    for k, n in enumerate(levels):
        cases = [(v, p) for v in variants for p in policies]
        cases = cases[k % len(cases) :] + cases[: k % len(cases)]  # each level starts at another case
        for variant, policy in cases:
            busy = _start_busy(n)
            try:
                time.sleep(args.settle if n else 0.0)
                res = _child(variant, policy, args)
            finally:
                _stop(busy)
            res["busy"] = n
            results.append(res)
            if "error" in res:
                print(f"warning: {variant} / {policy} beside {n}: {res['error']}", file=sys.stderr)
            else:  # progress: a full run takes minutes
                print(
                    f"{variant} / {policy} beside {n}: {res['threads']} thread(s), step "
                    f"{_median(res['step_s']):.3f} s, eval {_median(res['eval_s_per_image']):.3f} s/image",
                    file=sys.stderr,
                    flush=True,
                )
    rows, summary = _rows(results, levels)
    timing.report("contention", args, results, summary, {"config": args.config_file, "busy_levels": levels}, machine)
    headers = ["variant", "policy", "time", "threads"] + [f"beside {n}" if n else "alone" for n in levels]
    headers += [f"x beside {n}" for n in levels if n]
    timing.print_table(
        f"{args.config_file} {' '.join(args.opts or [])}: median of {args.repeat} steps after {args.warmup} "
        f"warm-up, evaluation per image over {args.eval_images} images (median of {args.eval_passes} passes), "
        f"alone and beside N busy single-thread processes ({os.cpu_count()} CPUs; load average before "
        f"{machine['loadavg_1_5_15']}); threads: per level",
        headers,
        rows,
    )
    timing.print_summary(summary)
    return 0
