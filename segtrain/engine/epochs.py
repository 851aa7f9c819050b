"""``SOLVER.MAX_EPOCHS``: a run length in passes over the training images, as SAM 3's recipes
give it (``max_epochs``), turned into ``SOLVER.MAX_ITER`` once the datasets are known."""

import logging
import weakref
from typing import Dict, Optional, Tuple

from segtrain.data import get_dataset_dicts, register_datasets_from_cfg
from segtrain.utils.errors import ConfigError

__all__ = ["apply_max_epochs", "iterations_per_epoch"]

logger = logging.getLogger(__name__)

#: configs this module has resolved: id -> (weak reference, the config's text then, the log
#: line). ``setup_cfg`` resolves the epochs before logging is set up and ``DefaultTrainer`` gets
#: the same config: it logs the line again instead of counting (reading the training json) again
_RESOLVED: Dict[int, Tuple[weakref.ref, str, str]] = {}


def _resolved(cfg, message: str):
    _RESOLVED[id(cfg)] = (weakref.ref(cfg), cfg.dump(), message)
    return cfg


def _resolution_of(cfg) -> Optional[str]:
    """The log line of an earlier resolution of this very config, unchanged since, or None."""
    ref, text, message = _RESOLVED.get(id(cfg), (None, None, None))
    return message if ref is not None and ref() is cfg and text == cfg.dump() else None


def iterations_per_epoch(num_images: int, ims_per_batch: int) -> int:
    """Full batches in one pass over ``num_images`` (the last partial batch dropped, as the
    official loaders' ``drop_last``), at least 1."""
    if ims_per_batch <= 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be > 0, got {ims_per_batch}")
    return max(1, num_images // ims_per_batch)


def apply_max_epochs(cfg):
    """``cfg`` itself when ``SOLVER.MAX_EPOCHS`` is 0; otherwise a copy (frozen as ``cfg`` was)
    with ``SOLVER.MAX_ITER = MAX_EPOCHS x iterations_per_epoch(training images, IMS_PER_BATCH)``.
    The images are those the training loader reads (``DATASETS.TRAIN`` after
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``). A config this function returned before, unchanged
    since, is returned as it is, without counting again (its log line is logged again: the
    first call, from ``setup_cfg``, comes before the log is set up)."""
    epochs = int(cfg.SOLVER.MAX_EPOCHS)
    if epochs <= 0:
        return cfg
    earlier = _resolution_of(cfg)
    if earlier is not None:
        logger.info(earlier)
        return cfg
    register_datasets_from_cfg(cfg)
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ConfigError("SOLVER.MAX_EPOCHS needs DATASETS.TRAIN (it is empty)")
    num_images = len(
        get_dataset_dicts(
            names,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION,
        )
    )
    per_epoch = iterations_per_epoch(num_images, int(cfg.SOLVER.IMS_PER_BATCH))
    max_iter = epochs * per_epoch
    message = (
        f"SOLVER.MAX_EPOCHS {epochs} over {num_images} training images ({', '.join(names)}) at "
        f"{cfg.SOLVER.IMS_PER_BATCH} per batch: {per_epoch} iterations per epoch, SOLVER.MAX_ITER {max_iter}"
    )
    logger.info(message)
    if max_iter == cfg.SOLVER.MAX_ITER:
        return _resolved(cfg, message)
    out = cfg.clone()
    out.defrost()
    out.SOLVER.MAX_ITER = max_iter
    if cfg.is_frozen():
        out.freeze()
    return _resolved(out, message)
