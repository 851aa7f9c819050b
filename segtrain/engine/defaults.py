"""``DefaultTrainer``: builds every part of a run from the config, then trains.

It assumes one model, one optimizer, one LR schedule and one training loader, all built from
the config by its ``build_*`` classmethods (override them to change one piece). For anything
more unusual write the loop out with ``SimpleTrainer`` and hooks. The entry-script helpers
(``default_argument_parser``, ``setup_cfg``, ``default_setup``, ``default_writers``, ``run_cli``)
live in :mod:`segtrain.engine.cli` and are importable from here too.
"""

import logging
import os
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from segtrain.checkpoint import Checkpointer, weights_prefixes
from segtrain.data import MetadataCatalog, build_mapper, get_dataset_dicts, register_datasets_from_cfg
from segtrain.data.loader_kinds import select_loader_kind
from segtrain.evaluation.build import build_evaluator
from segtrain.evaluation.evaluator import inference_on_dataset, print_csv_format
from segtrain.modeling import build_model
from segtrain.modeling.criterion.inspection import official_weight_differences
from segtrain.solver import (
    build_gradient_clipper,
    build_lr_scheduler,
    build_optimizer,
    freeze_modules,
    log_parameter_counts,
)
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError
from segtrain.utils.events import EventWriter
from segtrain.utils.logger import setup_logger

from . import hooks
from .cli import default_argument_parser, default_setup, default_writers, run_cli, setup_cfg
from .epochs import apply_max_epochs
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase

__all__ = [
    "default_argument_parser",
    "setup_cfg",
    "default_setup",
    "default_writers",
    "create_ddp_model",
    "DefaultTrainer",
    "run_cli",
]

logger = logging.getLogger(__name__)


def create_ddp_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap in ``DistributedDataParallel`` when there is more than one process. A model whose
    steps leave some parameters without a gradient (SAM 3's, as the official one) says so with
    a ``ddp_find_unused_parameters = True`` attribute."""
    if comm.get_world_size() == 1:
        return model
    kwargs.setdefault("find_unused_parameters", bool(getattr(model, "ddp_find_unused_parameters", False)))
    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:
        kwargs["device_ids"] = [comm.get_local_rank()]
    return DistributedDataParallel(model, **kwargs)


class DefaultTrainer(TrainerBase):
    """Builds model, optimizer, loader, schedule, checkpointer and hooks from ``cfg`` and
    trains (``SimpleTrainer`` or ``AMPTrainer`` with ``SOLVER.AMP.ENABLED``; DDP when the
    world size is > 1). Usage::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg):
        super().__init__()
        if not logging.getLogger("segtrain").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = apply_max_epochs(cfg)
        self.cfg = cfg
        _warn_unofficial_loss_settings(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        step_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        kwargs = {"dtype": cfg.SOLVER.AMP.DTYPE} if cfg.SOLVER.AMP.ENABLED else {}
        self._trainer = step_cls(
            model,
            data_loader,
            optimizer,
            build_gradient_clipper(cfg),
            cfg.SOLVER.ACCUM_ITER,
            metric_prefix=cfg.WRITERS.TRAIN_PREFIX,
            **kwargs,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            cfg=cfg,
            **weights_prefixes(cfg),
            optimizer=optimizer,
            scheduler=self.scheduler,
            trainer=weakref.proxy(self),
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        # how the run started ("resume", "weights" or "scratch") and from which file
        self.start_mode = "scratch"
        self.start_file = ""
        self._last_eval_results: Optional[Dict] = None
        self.register_hooks(self.build_hooks())

    @property
    def model(self) -> nn.Module:
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @property
    def data_loader(self):
        return self._trainer.data_loader

    def resume_or_load(self, resume: bool = True) -> None:
        """``resume`` (``--resume``): continue from the last checkpoint in ``OUTPUT_DIR`` if there is
        one: model, optimizer, scheduler, iteration, data position (``MODEL.WEIGHTS`` is then not
        used). Otherwise initialize the model only from ``MODEL.WEIGHTS`` (if set) and start at
        iteration 0 with a fresh optimizer and schedule. One ``Start-up:`` line in the log says
        which happened, from which file, at which iteration (also ``start_mode`` / ``start_file``)."""
        weights = self.cfg.MODEL.WEIGHTS
        extra = self.checkpointer.resume_or_load(weights, resume=resume)
        loaded = self.checkpointer.last_loaded_path
        if "iteration" in extra:
            saved_iter = int(extra["iteration"])
            self.start_iter = saved_iter + 1
            self.start_mode, self.start_file = "resume", loaded
            ignored = f"; MODEL.WEIGHTS={weights} is not used" if weights else ""
            msg = (
                f"Start-up: RESUMED the run in {self.cfg.OUTPUT_DIR} from {loaded} (saved after iteration "
                f"{saved_iter}): model, optimizer, scheduler, iteration and data position restored{ignored}; "
                f"training continues at iteration {self.start_iter} of {self.max_iter}"
            )
        else:
            self.start_iter = 0
            nothing = f"--resume found no checkpoint in {self.cfg.OUTPUT_DIR}, so " if resume else ""
            if weights:
                self.start_mode, self.start_file = "weights", loaded or weights
                msg = (
                    f"Start-up: {nothing}INITIALIZED the model weights from MODEL.WEIGHTS={weights} (model only; "
                    f"fresh optimizer and schedule; {self.checkpointer.last_match.summary()}); "
                    f"training starts at iteration 0 of {self.max_iter}"
                )
            else:
                self.start_mode, self.start_file = "scratch", ""
                msg = (
                    f"Start-up: {nothing}a NEW run from random initialization (no MODEL.WEIGHTS); "
                    f"training starts at iteration 0 of {self.max_iter}"
                )
        logger.info(msg)

    def build_hooks(self) -> List[Optional[hooks.HookBase]]:
        """Timer, LR, checkpoint hooks, evaluation, validation loss, prediction images, best
        checkpoint, early stopping, writers, end-of-run report."""
        cfg = self.cfg

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret: List[Optional[hooks.HookBase]] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            hooks.FailureCheckpointer(self.checkpointer),
            # checkpoint before evaluating, so a failing evaluation does not lose the trained weights
            hooks.PeriodicCheckpointer(
                self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, max_to_keep=cfg.SOLVER.MAX_TO_KEEP
            ),
            hooks.SignalCheckpointer(self.checkpointer),
            hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results),
            # at the end: how many bad items the training loader skipped (DATASETS.ON_BAD_ANNOTATION='skip')
            hooks.CallbackHook(after_train=lambda t: getattr(t.data_loader, "log_skipped", lambda: None)()),
        ]
        # at the evaluation period, before the watchers below, so they can watch val/total_loss
        if cfg.TEST.VAL_LOSS.ENABLED:
            amp_dtype = getattr(self._trainer, "dtype", None) if cfg.SOLVER.AMP.ENABLED else None
            ret.append(
                hooks.ValidationLoss(
                    cfg.TEST.EVAL_PERIOD,
                    lambda: self.build_val_loss_loader(cfg),
                    seed=max(cfg.SEED, 0),
                    autocast_dtype=amp_dtype,
                )
            )
        if cfg.TEST.VIS.PERIOD > 0:
            name = _first_test_dataset(cfg, "TEST.VIS.PERIOD > 0")
            ret.append(
                hooks.VisualizationHook(
                    cfg.TEST.VIS.PERIOD,
                    lambda: self.build_vis_inputs(cfg),
                    os.path.join(cfg.OUTPUT_DIR, "vis"),
                    metadata=MetadataCatalog.get(name),
                    score_threshold=cfg.TEST.VIS.SCORE_THRESHOLD,
                    image_format=cfg.INPUT.FORMAT,
                )
            )
        # both read the metric the evaluation hook (above) just put into the storage
        if cfg.TEST.BEST_CHECKPOINT.METRIC:
            ret.append(
                hooks.BestCheckpointer(
                    self.checkpointer, cfg.TEST.BEST_CHECKPOINT.METRIC, cfg.TEST.BEST_CHECKPOINT.MODE
                )
            )
        if cfg.TEST.EARLY_STOP.PATIENCE > 0:
            metric = cfg.TEST.EARLY_STOP.METRIC or cfg.TEST.BEST_CHECKPOINT.METRIC
            if not metric:
                raise ConfigError(
                    "TEST.EARLY_STOP.PATIENCE > 0 needs TEST.EARLY_STOP.METRIC "
                    "(or TEST.BEST_CHECKPOINT.METRIC), e.g. 'segm/AP'"
                )
            ret.append(hooks.EarlyStopping(metric, cfg.TEST.EARLY_STOP.MODE, cfg.TEST.EARLY_STOP.PATIENCE))
        if comm.is_main_process():
            # writers last: they publish what every other hook put into the storage this iteration
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.LOG_PERIOD))
            # after the writers' last flush (it completes metrics.json) and the final evaluation
            ret.append(hooks.TrainingReport(cfg.OUTPUT_DIR, lambda: self._last_eval_results))
        return ret

    def build_writers(self) -> List[EventWriter]:
        return default_writers(self.cfg, self.max_iter)

    def train(self) -> Optional[Dict]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``; returns the last evaluation results
        (the ``TrainingReport`` hook also writes them to ``OUTPUT_DIR/metrics_final.json``)."""
        super().train(self.start_iter, self.max_iter)
        return self._last_eval_results

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.max_iter = self.max_iter
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._trainer.load_state_dict(state["_trainer"])

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg) -> nn.Module:
        """``segtrain.modeling.build_model`` + ``MODEL.FROZEN_MODULES``; logs parameter counts."""
        model = build_model(cfg)
        freeze_modules(model, cfg.MODEL.FROZEN_MODULES)
        log_parameter_counts(model)
        logger.debug(f"Model:\n{model}")
        return model

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        """The training loader of the kind of data in ``DATASETS.TRAIN`` (images by default;
        a data package registers other kinds, e.g. video clips)."""
        return select_loader_kind(cfg, cfg.DATASETS.TRAIN).train(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return select_loader_kind(cfg, [dataset_name]).test(cfg, dataset_name)

    @classmethod
    def build_val_loss_loader(cls, cfg):
        """Loader of the validation loss (``TEST.VAL_LOSS``): the first ``NUM_BATCHES x
        IMS_PER_BATCH x processes`` items of ``DATASETS.TEST[0]`` in training-batch format,
        sharded over processes, ``IMS_PER_BATCH`` (0: the training per-process batch) per
        batch, built by the loader kind of that dataset."""
        name = _first_test_dataset(cfg, "TEST.VAL_LOSS.ENABLED")
        world = comm.get_world_size()
        per_process = cfg.TEST.VAL_LOSS.IMS_PER_BATCH or max(cfg.SOLVER.IMS_PER_BATCH // world, 1)
        return select_loader_kind(cfg, [name]).val_loss(cfg, name, per_process, world)

    @classmethod
    def build_vis_inputs(cls, cfg) -> List[Dict[str, Any]]:
        """The fixed inputs of the visualization hook: the first ``TEST.VIS.NUM_IMAGES`` images
        of ``DATASETS.TEST[0]`` through the test mapper."""
        name = _first_test_dataset(cfg, "TEST.VIS.PERIOD > 0")
        register_datasets_from_cfg(cfg)
        dicts = get_dataset_dicts(name, filter_empty=False, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION)
        mapper = build_mapper(cfg, is_train=False)
        mapped = [mapper(d) for d in dicts[: max(cfg.TEST.VIS.NUM_IMAGES, 0)]]
        return [m for m in mapped if m is not None]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model: nn.Module, evaluators: Optional[Sequence] = None) -> Dict:
        """Evaluate ``model`` on every ``DATASETS.TEST`` dataset. ``evaluators``: one per dataset
        (default: ``build_evaluator``). Returns ``{dataset: results}``, or the results
        themselves when there is a single dataset."""
        names = list(cfg.DATASETS.TEST)
        if evaluators is not None and not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(names):
            raise ConfigError(f"{len(evaluators)} evaluators given for {len(names)} DATASETS.TEST entries {names}")
        results: "OrderedDict[str, Any]" = OrderedDict()
        for idx, name in enumerate(names):
            loader = cls.build_test_loader(cfg, name)
            evaluator = evaluators[idx] if evaluators is not None else cls.build_evaluator(cfg, name)
            res = inference_on_dataset(model, loader, evaluator)
            results[name] = res
            if comm.is_main_process() and res:
                logger.info(f"Evaluation results for {name} in csv format:")
                print_csv_format(res)
        if len(results) == 1:
            return list(results.values())[0]
        return results


def _warn_unofficial_loss_settings(cfg) -> None:
    """One start-up WARNING listing every loss weight or whole-loss scaling option of the
    configured criterion that differs from its official default (wrong weights are the most
    common porting mistake, and nothing else fails when they are wrong)."""
    diffs = official_weight_differences(cfg)
    if diffs:
        logger.warning(
            f"Start-up: {len(diffs)} loss setting(s) differ from the official defaults: "
            + "; ".join(diffs)
            + " (tools/inspect_loss.py shows what each term weighs)"
        )


def _first_test_dataset(cfg, needed_by: str) -> str:
    if not cfg.DATASETS.TEST:
        raise ConfigError(f"{needed_by} needs a validation dataset in DATASETS.TEST (it is empty)")
    return cfg.DATASETS.TEST[0]
