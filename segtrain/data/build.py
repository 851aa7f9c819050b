"""Loader builders: dataset dicts -> mapper (in worker processes) -> batches (lists of dicts)."""

import functools
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from segtrain.config import configurable
from segtrain.utils import comm, cpu_share
from segtrain.utils.errors import ConfigError, DatasetError

from .catalog import DatasetCatalog
from .common import DatasetFromList, MapDataset, mix_seed
from .datasets.annotation_checks import bad_annotation_policy, count_skipped, get_bad_annotation_policy
from .datasets.builtin import register_datasets_from_cfg
from .loader_kinds import LoaderKind, register_loader_kind
from .mappers import build_mapper
from .samplers import InferenceSampler, TrainingSampler

__all__ = [
    "build_val_loss_loader",
    "val_loss_loader_of",
    "get_dataset_dicts",
    "build_train_loader",
    "build_test_loader",
    "DatasetFromList",
    "MapDataset",
    "TrainDataLoader",
    "InferenceDataLoader",
]

logger = logging.getLogger(__name__)


def get_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    on_bad_annotation: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Concatenated dataset dicts of the datasets ``names``.

    ``filter_empty`` drops images without any non-crowd annotation; ``on_bad_annotation``
    ("error" / "skip", default: the policy in effect) applies to the loaders called here.
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ConfigError("no dataset names given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    policy = on_bad_annotation or get_bad_annotation_policy()
    dicts: List[Dict[str, Any]] = []
    with bad_annotation_policy(policy):
        for name in names:
            part = DatasetCatalog.get(name)
            if len(part) == 0:
                raise DatasetError(f"dataset {name!r} has no images")
            dicts.extend(part)
    if filter_empty:
        before = len(dicts)
        dicts = [d for d in dicts if _has_targets(d)]
        if before != len(dicts):
            logger.info("Removed %d image(s) without annotations; %d left", before - len(dicts), len(dicts))
        if not dicts:
            raise DatasetError(f"every image of {', '.join(names)} has no annotations (filter_empty=True)")
    n_inst = sum(len(d.get("annotations", [])) for d in dicts)
    n_seg = sum(len(d.get("segments_info", [])) for d in dicts)
    logger.info(
        "Dataset(s) %s: %d images, %d annotations%s",
        ", ".join(names),
        len(dicts),
        n_inst,
        f", {n_seg} panoptic segments" if n_seg else "",
    )
    return dicts


def _has_targets(d: Dict[str, Any]) -> bool:
    """Whether a dataset dict has something to train on: a non-crowd instance annotation, a
    non-crowd panoptic segment, or a semantic label map."""
    if "annotations" in d:
        return any(not a.get("iscrowd", 0) for a in d["annotations"])
    if d.get("pan_seg_file_name"):
        return any(not s.get("iscrowd", 0) for s in d.get("segments_info", []))
    return bool(d.get("sem_seg_file_name"))


class _PositionedSampler(Sampler):
    """``(position, index)`` keys for ``_PositionedItems``: a ``TrainingSampler``'s global
    positions, or for any other sampler each index as its own position."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        if isinstance(self.sampler, TrainingSampler):
            return self.sampler.positions()
        return ((i, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _PositionedItems(Dataset):
    """``MapDataset.map_at`` under ``(position, index)`` keys."""

    def __init__(self, dataset: MapDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Tuple[Any, int]:
        return self.dataset.map_at(*key)


def _worker_init_fn(worker_id: int, niceness: int = 0) -> None:
    # MapDataset seeds every item itself; this only gives other code in the worker its own stream
    np.random.seed(torch.utils.data.get_worker_info().seed % 2**32)
    # the worker yields to the main process's compute threads: on a busy CPU a mapping that
    # preempts one thread of the OpenMP team stalls the whole team at its next barrier
    if niceness > 0 and hasattr(os, "nice"):
        os.nice(niceness)
    cv2.setNumThreads(1)  # no OpenCV thread team per worker beside the compute threads


def _worker_init(num_workers: int) -> Callable[[int], None]:
    """The workers' init function, at the niceness of ``cpu_share.loader_niceness`` (logged)."""
    niceness = cpu_share.loader_niceness()
    if num_workers > 0:
        logger.info(f"{num_workers} data-loader worker process(es) at niceness +{niceness}, one OpenCV thread each")
    return functools.partial(_worker_init_fn, niceness=niceness)


def _collate_counted(batch: List[Tuple[Any, int]]) -> Tuple[List[Any], int]:
    """(items that were not skipped, number of bad items skipped for this batch)."""
    return [x for x, _ in batch if x is not None], sum(n for _, n in batch)


class TrainDataLoader:
    """Infinite iterable of training batches (lists of mapper outputs, ``batch_size`` each)
    with an exact-resume position.

    Each sample's augmentation is seeded from (seed, its global position in the sample
    stream), so a resumed run maps exactly the samples an uninterrupted run would have.
    ``state_dict()`` counts the batches handed out (not those prefetched by workers);
    ``load_state_dict`` makes the next batch the one after that position. ``num_skipped``:
    bad items skipped (and replaced) under ``DATASETS.ON_BAD_ANNOTATION='skip'``.
    """

    def __init__(self, dataset: MapDataset, sampler: TrainingSampler, batch_size: int, num_workers: int, seed: int):
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self._base = sampler.start  # per-rank items consumed when the current iterator started
        self._batches = 0  # batches handed out since then
        self.num_skipped = 0
        self._it: Optional[Iterator[Tuple[List[Any], int]]] = None

    def _make_iter(self) -> Iterator[Tuple[List[Any], int]]:
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, comm.get_rank(), self.sampler.start) % 2**63)
        loader = DataLoader(
            _PositionedItems(self.dataset),
            batch_size=self.batch_size,
            sampler=_PositionedSampler(self.sampler),
            num_workers=self.num_workers,
            collate_fn=_collate_counted,
            drop_last=True,
            worker_init_fn=_worker_init(self.num_workers),
            generator=g,
        )
        return iter(loader)

    def __iter__(self) -> Iterator[List[Any]]:
        while True:
            if self._it is None:
                self._it = self._make_iter()
            batch, skipped = next(self._it)
            self._batches += 1
            self.num_skipped += skipped
            yield batch

    @property
    def position(self) -> int:
        """Items of this rank's stream handed out so far (including before a resume)."""
        return self._base + self._batches * self.batch_size

    def log_skipped(self) -> None:
        """Log how many bad items were skipped (the trainer calls it when training ends)."""
        if self.num_skipped:
            logger.warning(
                "Training skipped %d bad item(s) (DATASETS.ON_BAD_ANNOTATION='skip'); each was "
                "replaced by another item of the dataset",
                self.num_skipped,
            )

    def state_dict(self) -> Dict[str, Any]:
        return dict(self.sampler.state_dict(consumed=self.position), num_skipped=self.num_skipped)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.num_skipped = int(state.get("num_skipped", 0))
        self._base, self._batches = self.sampler.start, 0
        self._it = None  # drop prefetched batches; restart at the loaded position


class InferenceDataLoader:
    """Batches of an ``InferenceSampler`` shard (each image once), without the images skipped
    as bad (a batch left empty is not yielded). ``len`` = number of batches.

    ``num_skipped``: images skipped so far, by the mapper and (``skipped_at_load``) when the
    annotation file was read; logged once the pass is complete."""

    def __init__(self, loader: DataLoader, *, skipped_at_load: int = 0):
        self._loader = loader
        self.dataset, self.batch_size = loader.dataset.dataset, loader.batch_size
        self.sampler = loader.sampler.sampler
        self.skipped_at_load = int(skipped_at_load)
        self.skipped_by_mapper = 0

    @property
    def num_skipped(self) -> int:
        return self.skipped_at_load + self.skipped_by_mapper

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[List[Any]]:
        self.skipped_by_mapper = 0
        mapped = 0
        for batch, skipped in self._loader:
            self.skipped_by_mapper += skipped
            mapped += len(batch)
            if batch:
                yield batch
        if self.num_skipped:
            logger.warning(
                "Inference loader: %d image(s) mapped, %d skipped as bad (%d when reading the annotations, %d by "
                "the mapper; DATASETS.ON_BAD_ANNOTATION='skip')",
                mapped,
                self.num_skipped,
                self.skipped_at_load,
                self.skipped_by_mapper,
            )


def resolve_seed(seed: Optional[int]) -> int:
    """``seed``, or one random seed shared by all processes when it is None or negative."""
    if seed is None or seed < 0:
        return comm.shared_random_seed()
    return int(seed)


def per_process_batch_size(total_batch_size: int, num_workers: int) -> int:
    """``total_batch_size // world_size`` after checking both config values (one-line errors)."""
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world != 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the number of processes "
            f"({world})"
        )
    if num_workers < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS must be >= 0, got {num_workers}")
    return total_batch_size // world


def _train_loader_from_config(cfg, mapper=None, *, dataset=None, start_iter: int = 0) -> Dict[str, Any]:
    register_datasets_from_cfg(cfg)
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ConfigError(f"DATALOADER.SAMPLER_TRAIN must be 'TrainingSampler', got {cfg.DATALOADER.SAMPLER_TRAIN!r}")
    if dataset is None:
        dataset = get_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION,
        )
    if mapper is None:
        mapper = build_mapper(cfg, is_train=True)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": cfg.SEED,
        "start_iter": start_iter,
    }


@configurable(from_config=_train_loader_from_config)
def build_train_loader(
    dataset: List[Dict[str, Any]],
    *,
    mapper: Callable[[Dict[str, Any]], Any],
    total_batch_size: int,
    num_workers: int = 0,
    seed: Optional[int] = None,
    start_iter: int = 0,
) -> TrainDataLoader:
    """Infinite training loader: each batch is a list of ``total_batch_size // world_size``
    mapper outputs. ``build_train_loader(cfg)`` reads ``DATASETS.TRAIN``, ``SOLVER.IMS_PER_BATCH``,
    ``DATALOADER.NUM_WORKERS``, ``SEED`` and ``INPUT.DATASET_MAPPER_NAME``; ``start_iter``
    resumes the sampler after that many iterations (or use ``load_state_dict``)."""
    batch_size = per_process_batch_size(total_batch_size, num_workers)
    seed = resolve_seed(seed)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, start=int(start_iter) * batch_size)
    data = MapDataset(DatasetFromList(dataset), mapper, retry=True, seed=seed)
    return TrainDataLoader(data, sampler, batch_size, num_workers, seed)


def _test_loader_from_config(cfg, dataset_name: Union[str, Sequence[str]], mapper=None) -> Dict[str, Any]:
    register_datasets_from_cfg(cfg)
    with count_skipped() as skipped:
        dataset = get_dataset_dicts(dataset_name, filter_empty=False, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION)
    if mapper is None:
        mapper = build_mapper(cfg, is_train=False)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "skipped_at_load": skipped.images,
    }


@configurable(from_config=_test_loader_from_config)
def build_test_loader(
    dataset: List[Dict[str, Any]],
    *,
    mapper: Callable[[Dict[str, Any]], Any],
    num_workers: int = 0,
    batch_size: int = 1,
    skipped_at_load: int = 0,
) -> InferenceDataLoader:
    """Inference loader over this rank's contiguous shard of ``dataset``, every image once,
    batches of ``batch_size`` (1) lists of mapper outputs. ``build_test_loader(cfg, name)``
    loads dataset ``name`` with the test mapper. ``skipped_at_load``: images of the dataset
    already dropped as bad when it was read (reported with the mapper's skips)."""
    data = MapDataset(DatasetFromList(dataset), mapper, retry=False, seed=0)
    loader = DataLoader(
        _PositionedItems(data),
        batch_size=batch_size,
        sampler=_PositionedSampler(InferenceSampler(len(dataset))),
        num_workers=num_workers,
        collate_fn=_collate_counted,
        worker_init_fn=_worker_init(num_workers),
    )
    return InferenceDataLoader(loader, skipped_at_load=skipped_at_load)


def build_val_loss_loader(cfg, dataset_name: str, per_process: int, world: int) -> InferenceDataLoader:
    """Validation-loss loader of an image dataset: the first ``TEST.VAL_LOSS.NUM_BATCHES x
    per_process x world`` images of ``dataset_name`` through the test mapper (deterministic
    resize, annotations kept as ``instances``), sharded over processes, ``per_process``
    images per batch."""
    register_datasets_from_cfg(cfg)
    dicts = get_dataset_dicts(
        dataset_name,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION,
    )
    return val_loss_loader_of(cfg, dicts, build_mapper(cfg, is_train=False), dataset_name, per_process, world)


def val_loss_loader_of(
    cfg,
    dicts: List[Dict[str, Any]],
    mapper: Callable,
    dataset_name: str,
    per_process: int,
    world: int,
    unit: str = "images",
) -> InferenceDataLoader:
    """The inference loader of the first ``TEST.VAL_LOSS.NUM_BATCHES x per_process x world`` items
    of ``dicts`` (all when NUM_BATCHES <= 0) through ``mapper``, ``per_process`` items per batch."""
    if cfg.TEST.VAL_LOSS.NUM_BATCHES > 0:
        dicts = dicts[: cfg.TEST.VAL_LOSS.NUM_BATCHES * per_process * world]
    logger.info(f"Validation loss on {len(dicts)} {unit} of {dataset_name} ({per_process} per batch and process)")
    return build_test_loader(dicts, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS, batch_size=per_process)


register_loader_kind(
    LoaderKind(
        name="image",
        applies=lambda cfg, names: True,
        train=build_train_loader,
        test=build_test_loader,
        val_loss=build_val_loss_loader,
    )
)
