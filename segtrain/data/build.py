"""Loader builders: dataset dicts -> mapper (in worker processes) -> batches (lists of dicts)."""
import logging
import pickle
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segtrain.config import configurable
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError, DatasetError

from .catalog import DatasetCatalog
from .datasets.builtin import register_shapes_from_cfg
from .datasets.coco import bad_annotation_policy, get_bad_annotation_policy
from .mappers import build_mapper
from .samplers import InferenceSampler, TrainingSampler

__all__ = [
    "get_dataset_dicts",
    "build_train_loader",
    "build_test_loader",
    "DatasetFromList",
    "MapDataset",
    "TrainDataLoader",
    "InferenceDataLoader",
]

logger = logging.getLogger(__name__)

_MAX_SKIPS_IN_A_ROW = 50


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
        dicts = [d for d in dicts if any(not a.get("iscrowd", 0) for a in d.get("annotations", []))]
        if before != len(dicts):
            logger.info("Removed %d image(s) without annotations; %d left", before - len(dicts), len(dicts))
        if not dicts:
            raise DatasetError(f"every image of {', '.join(names)} has no annotations (filter_empty=True)")
    n_inst = sum(len(d.get("annotations", [])) for d in dicts)
    logger.info("Dataset(s) %s: %d images, %d annotations", ", ".join(names), len(dicts), n_inst)
    return dicts


class DatasetFromList(Dataset):
    """A list of dicts stored as one pickled byte buffer, so that forked workers do not
    copy the list (touching Python objects' refcounts would)."""

    def __init__(self, items: List[Any]):
        blobs = [np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in items]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, idx: int) -> Any:
        start = 0 if idx == 0 else int(self._ends[idx - 1])
        return pickle.loads(memoryview(self._data[start : int(self._ends[idx])]))


class MapDataset(Dataset):
    """``map_func(dataset[idx])``, with the mapper's ``np.random`` draws taken from this
    dataset's own RNG (seeded per worker), so augmentation is reproducible and does not
    disturb the caller's global RNG.

    When ``map_func`` returns ``None`` (a skipped bad image): with ``retry`` another random
    item is mapped instead; without, ``None`` is returned (the collate drops it).
    """

    def __init__(self, dataset: Dataset, map_func: Callable[[Any], Any], *, retry: bool, seed: int = 0):
        self._dataset, self._map_func, self._retry = dataset, map_func, retry
        self._rng = np.random.RandomState(seed % 2**32)

    def reseed(self, seed: int) -> None:
        self._rng = np.random.RandomState(seed % 2**32)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        saved = np.random.get_state()
        np.random.set_state(self._rng.get_state())
        try:
            for _ in range(_MAX_SKIPS_IN_A_ROW):
                out = self._map_func(self._dataset[idx])
                if out is not None or not self._retry:
                    return out
                idx = int(np.random.randint(len(self._dataset)))
            raise DatasetError(
                f"{_MAX_SKIPS_IN_A_ROW} images in a row were skipped as bad; check the dataset (last index {idx})"
            )
        finally:
            self._rng.set_state(np.random.get_state())
            np.random.set_state(saved)


def _worker_init_fn(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    # torch gives each worker base_seed + worker_id, with base_seed drawn from the loader's generator
    seed = info.seed % 2**32
    np.random.seed(seed)
    if isinstance(info.dataset, MapDataset):
        info.dataset.reseed(seed)


def _collate_list(batch: List[Any]) -> List[Any]:
    return [x for x in batch if x is not None]


def _mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


class TrainDataLoader:
    """Infinite iterable of training batches (lists of mapper outputs, ``batch_size`` each)
    with an exact-resume position.

    ``state_dict()`` counts the batches handed out (not those prefetched by workers);
    ``load_state_dict`` makes the next batch the one after that position.
    """

    def __init__(self, dataset: MapDataset, sampler: TrainingSampler, batch_size: int, num_workers: int, seed: int):
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self._base = sampler.start  # per-rank items consumed when the current iterator started
        self._batches = 0  # batches handed out since then
        self._it: Optional[Iterator[List[Any]]] = None

    def _make_iter(self) -> Iterator[List[Any]]:
        # augmentation seeds depend on the position, so a resumed run does not repeat them
        seed = _mix_seed(self.seed, comm.get_rank(), self.sampler.start)
        self.dataset.reseed(seed)
        g = torch.Generator()
        g.manual_seed(seed % 2**63)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=_collate_list,
            drop_last=True,
            worker_init_fn=_worker_init_fn,
            generator=g,
        )
        return iter(loader)

    def __iter__(self) -> Iterator[List[Any]]:
        while True:
            if self._it is None:
                self._it = self._make_iter()
            batch = next(self._it)
            self._batches += 1
            yield batch

    @property
    def position(self) -> int:
        """Items of this rank's stream handed out so far (including before a resume)."""
        return self._base + self._batches * self.batch_size

    def state_dict(self) -> Dict[str, Any]:
        return self.sampler.state_dict(consumed=self.position)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._base, self._batches = self.sampler.start, 0
        self._it = None  # drop prefetched batches; restart at the loaded position


class InferenceDataLoader:
    """Batches of an ``InferenceSampler`` shard (each image once), skipping batches that
    became empty because their image was skipped as bad. ``len`` = number of batches."""

    def __init__(self, loader: DataLoader):
        self._loader = loader
        self.dataset, self.batch_size, self.sampler = loader.dataset, loader.batch_size, loader.sampler

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[List[Any]]:
        for batch in self._loader:
            if batch:
                yield batch


def _resolve_seed(seed: Optional[int]) -> int:
    if seed is None or seed < 0:
        return comm.shared_random_seed()
    return int(seed)


def _train_loader_from_config(cfg, mapper=None, *, dataset=None, start_iter: int = 0) -> Dict[str, Any]:
    register_shapes_from_cfg(cfg)
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ConfigError(
            f"DATALOADER.SAMPLER_TRAIN must be 'TrainingSampler', got {cfg.DATALOADER.SAMPLER_TRAIN!r}"
        )
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
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world != 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be a positive multiple of the number of processes ({world})"
        )
    if num_workers < 0:
        raise ConfigError(f"DATALOADER.NUM_WORKERS must be >= 0, got {num_workers}")
    batch_size = total_batch_size // world
    seed = _resolve_seed(seed)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, start=int(start_iter) * batch_size)
    data = MapDataset(DatasetFromList(dataset), mapper, retry=True, seed=seed)
    return TrainDataLoader(data, sampler, batch_size, num_workers, seed)


def _test_loader_from_config(cfg, dataset_name: Union[str, Sequence[str]], mapper=None) -> Dict[str, Any]:
    register_shapes_from_cfg(cfg)
    dataset = get_dataset_dicts(dataset_name, filter_empty=False, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION)
    if mapper is None:
        mapper = build_mapper(cfg, is_train=False)
    return {"dataset": dataset, "mapper": mapper, "num_workers": cfg.DATALOADER.NUM_WORKERS}


@configurable(from_config=_test_loader_from_config)
def build_test_loader(
    dataset: List[Dict[str, Any]],
    *,
    mapper: Callable[[Dict[str, Any]], Any],
    num_workers: int = 0,
    batch_size: int = 1,
) -> InferenceDataLoader:
    """Inference loader over this rank's contiguous shard of ``dataset``, every image once,
    batches of ``batch_size`` (1) lists of mapper outputs. ``build_test_loader(cfg, name)``
    loads dataset ``name`` with the test mapper."""
    data = MapDataset(DatasetFromList(dataset), mapper, retry=False, seed=0)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=InferenceSampler(len(dataset)),
        num_workers=num_workers,
        collate_fn=_collate_list,
        worker_init_fn=_worker_init_fn,
    )
    return InferenceDataLoader(loader)
