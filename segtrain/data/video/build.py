"""Video loader builders: video (and image-as-video) dataset dicts -> ``VideoDatasetMapper`` clips
-> ``BatchedVideoDatapoint`` batches (training) or lists of whole-video clips (inference)."""

import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from segtrain.config import configurable
from segtrain.utils.errors import ConfigError, DatasetError

from ..build import (
    DatasetFromList,
    InferenceDataLoader,
    MapDataset,
    TrainDataLoader,
    build_test_loader,
    per_process_batch_size,
    resolve_seed,
    val_loss_loader_of,
)
from ..catalog import DatasetCatalog, MetadataCatalog
from ..datasets.builtin import register_datasets_from_cfg
from ..datasets.coco import bad_annotation_policy, get_bad_annotation_policy
from ..datasets.shapes_video import register_shapes_video_from_cfg
from ..loader_kinds import LoaderKind, register_loader_kind
from ..samplers import TrainingSampler
from .clip_sampler import as_video_dict
from .datapoint import BatchedVideoDatapoint, collate_video_clips
from .mapper import VideoDatasetMapper
from .video_objects import video_objects

__all__ = [
    "build_video_val_loss_loader",
    "uses_video_loader",
    "get_video_dataset_dicts",
    "build_video_train_loader",
    "build_video_test_loader",
    "VideoTrainDataLoader",
]

logger = logging.getLogger(__name__)


def get_video_dataset_dicts(
    names: Union[str, Sequence[str]],
    *,
    min_length: int = 1,
    filter_empty: bool = True,
    on_bad_annotation: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Concatenated dicts of the datasets ``names`` as video dicts: image datasets become
    one-frame videos (``image_dict_to_video_dict``). ``filter_empty`` drops videos without
    objects; videos with fewer than ``min_length`` annotated frames are dropped (images, one
    frame, stay: they are one-frame clips)."""
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise ConfigError("no dataset names given (DATASETS.TRAIN / DATASETS.TEST is empty)")
    dicts: List[Dict[str, Any]] = []
    with bad_annotation_policy(on_bad_annotation or get_bad_annotation_policy()):
        for name in names:
            part = DatasetCatalog.get(name)
            if not part:
                raise DatasetError(f"dataset {name!r} has no videos or images")
            dicts.extend(as_video_dict(d) for d in part)
    before = len(dicts)
    if filter_empty:  # label-map and masklet videos are read lazily; their readers refuse videos without objects
        dicts = [d for d in dicts if d.get("annotations", True)]
    # clips are drawn among the annotated frames
    lengths = {id(d): len(video_objects(d).annotated_frames()) for d in dicts}
    short = [d for d in dicts if 1 < lengths[id(d)] < min_length]
    if short:
        logger.warning(
            "Dropped %d video(s) shorter than %d frames (INPUT.VIDEO.NUM_FRAMES), e.g. video id %s",
            len(short),
            min_length,
            short[0]["video_id"],
        )
        dicts = [d for d in dicts if not 1 < lengths[id(d)] < min_length]
    if not dicts:
        raise DatasetError(
            f"no usable video or image left in {', '.join(names)} ({before} before dropping ones without "
            f"objects or shorter than {min_length} frames)"
        )
    n_img = sum(1 for d in dicts if d.get("is_image"))
    logger.info(
        "Video dataset(s) %s: %d videos, %d images (one-frame clips), %s object tracks",
        ", ".join(names),
        len(dicts) - n_img,
        n_img,
        sum(len(d["annotations"]) for d in dicts) if all("annotations" in d for d in dicts) else "unread",
    )
    return dicts


class VideoTrainDataLoader:
    """Infinite iterable of ``BatchedVideoDatapoint`` with an exact-resume position.

    Clips of one batch must have the same number of frames, so videos (T = NUM_FRAMES) and
    images (T = 1) are batched apart, as SAM 2 batches SA-V and SA-1B apart: each batch comes
    from one group, chosen by a seeded draw (batch ``k``'s group depends only on the seed and
    ``k``), with probability ``group_probs``. Each group is a ``TrainDataLoader`` with its
    own sampler position; ``state_dict`` holds them all plus the batch count.
    """

    def __init__(
        self,
        groups: Dict[str, TrainDataLoader],
        group_probs: Dict[str, float],
        *,
        seed: int,
        pad_objects_to: Optional[int] = None,
    ):
        self.groups = dict(groups)
        self._names = sorted(self.groups)
        probs = np.array([float(group_probs[n]) for n in self._names], dtype=np.float64)
        self._cdf = np.cumsum(probs / probs.sum())
        self.seed = int(seed)
        self.pad_objects_to = pad_objects_to
        self._batches = 0
        self._rng = self._make_rng(0)
        self._iters: Dict[str, Iterator] = {}

    def _make_rng(self, skip: int) -> np.random.Generator:
        rng = np.random.default_rng([self.seed, 0x56_49_44])  # a stream of its own ("VID")
        if skip:
            rng.random(skip)  # replay the first `skip` group choices
        return rng

    def _next_group(self) -> str:
        i = int(np.searchsorted(self._cdf, self._rng.random(), side="right"))
        return self._names[min(i, len(self._names) - 1)]

    def __iter__(self) -> Iterator[BatchedVideoDatapoint]:
        while True:
            name = self._next_group()
            if name not in self._iters:
                self._iters[name] = iter(self.groups[name])
            batch = next(self._iters[name])
            self._batches += 1
            yield collate_video_clips(batch, pad_objects_to=self.pad_objects_to)

    def state_dict(self) -> Dict[str, Any]:
        return {"batches": self._batches, "groups": {n: g.state_dict() for n, g in self.groups.items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if sorted(state["groups"]) != self._names:
            raise DatasetError(
                f"loader state is for batch groups {sorted(state['groups'])}, this loader has {self._names}"
            )
        for n, s in state["groups"].items():
            self.groups[n].load_state_dict(s)
        self._batches = int(state["batches"])
        self._rng = self._make_rng(self._batches)
        self._iters = {}  # drop prefetched batches


def _video_train_loader_from_config(cfg, mapper=None, *, dataset=None, start_iter: int = 0) -> Dict[str, Any]:
    register_datasets_from_cfg(cfg)
    register_shapes_video_from_cfg(cfg)
    v = cfg.INPUT.VIDEO
    if dataset is None:
        dataset = get_video_dataset_dicts(
            cfg.DATASETS.TRAIN, min_length=v.NUM_FRAMES, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION
        )
    if mapper is None:
        mapper = VideoDatasetMapper(cfg, is_train=True)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "seed": cfg.SEED,
        "start_iter": start_iter,
        "pad_objects_to": v.MAX_OBJECTS if v.PAD_OBJECTS else None,
        "image_batch_prob": v.IMAGE_BATCH_PROB,
    }


@configurable(from_config=_video_train_loader_from_config)
def build_video_train_loader(
    dataset: List[Dict[str, Any]],
    *,
    mapper,
    total_batch_size: int,
    num_workers: int = 0,
    seed: Optional[int] = None,
    start_iter: int = 0,
    pad_objects_to: Optional[int] = None,
    image_batch_prob: float = -1.0,
) -> VideoTrainDataLoader:
    """Infinite loader of ``BatchedVideoDatapoint`` with ``total_batch_size // world_size``
    clips per batch. ``dataset``: video dicts and/or image dicts (read as one-frame clips).
    ``image_batch_prob``: chance that a batch is made of images when both kinds are present
    (< 0: the share of images in ``dataset``). ``build_video_train_loader(cfg)`` reads
    ``DATASETS.TRAIN``, ``SOLVER.IMS_PER_BATCH``, ``DATALOADER.NUM_WORKERS``, ``SEED`` and
    ``INPUT.VIDEO.*``."""
    batch_size = per_process_batch_size(total_batch_size, num_workers)
    dataset = [as_video_dict(d) for d in dataset]
    by_kind = {
        "images": [d for d in dataset if d.get("is_image")],
        "videos": [d for d in dataset if not d.get("is_image")],
    }
    by_kind = {k: v for k, v in by_kind.items() if v}
    if not by_kind:
        raise DatasetError("build_video_train_loader got an empty dataset")
    if len(by_kind) == 2:
        p_img = len(by_kind["images"]) / len(dataset) if image_batch_prob < 0 else float(image_batch_prob)
        if not 0 <= p_img <= 1:
            raise ConfigError(f"INPUT.VIDEO.IMAGE_BATCH_PROB must be in [0, 1] or negative, got {image_batch_prob}")
        probs = {"images": p_img, "videos": 1 - p_img}
    else:
        probs = {k: 1.0 for k in by_kind}
    seed = resolve_seed(seed)
    groups = {}
    for k, (kind, dicts) in enumerate(sorted(by_kind.items())):
        group_seed = seed + k  # distinct augmentation and order streams per group
        sampler = TrainingSampler(len(dicts), shuffle=True, seed=group_seed)
        data = MapDataset(DatasetFromList(dicts), mapper, retry=True, seed=group_seed)
        groups[kind] = TrainDataLoader(data, sampler, batch_size, num_workers, group_seed)
    loader = VideoTrainDataLoader(groups, probs, seed=seed, pad_objects_to=pad_objects_to)
    if start_iter:
        # replay the group choices of the first start_iter batches to place each group's sampler
        rng = loader._make_rng(0)
        choices = [
            loader._names[min(int(i), len(loader._names) - 1)]
            for i in np.searchsorted(loader._cdf, rng.random(int(start_iter)), side="right")
        ]
        state = {
            "batches": int(start_iter),
            "groups": {
                n: dict(g.sampler.state_dict(), global_position=choices.count(n) * total_batch_size)
                for n, g in groups.items()
            },
        }
        loader.load_state_dict(state)
    logger.info("Video train loader: groups %s, batch %d clips per process", probs, batch_size)
    return loader


def _video_test_loader_from_config(cfg, dataset_name: Union[str, Sequence[str]], mapper=None) -> Dict[str, Any]:
    register_datasets_from_cfg(cfg)
    register_shapes_video_from_cfg(cfg)
    dataset = get_video_dataset_dicts(
        dataset_name, filter_empty=False, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION
    )
    if mapper is None:
        mapper = VideoDatasetMapper(cfg, is_train=False)
    return {"dataset": dataset, "mapper": mapper, "num_workers": cfg.DATALOADER.NUM_WORKERS}


@configurable(from_config=_video_test_loader_from_config)
def build_video_test_loader(dataset: List[Dict[str, Any]], *, mapper, num_workers: int = 0) -> InferenceDataLoader:
    """Inference loader over this rank's shard: each batch is a list holding ONE whole-video
    clip dict (every frame, every object; ``VideoDatasetMapper`` output), the input format of
    ``inference_on_dataset`` and ``VideoEvaluator``. ``collate_video_clips(batch)`` gives the
    ``BatchedVideoDatapoint`` form. ``build_video_test_loader(cfg, name)`` loads dataset ``name``."""
    dataset = [as_video_dict(d) for d in dataset]
    return build_test_loader(dataset, mapper=mapper, num_workers=num_workers, batch_size=1)


def uses_video_loader(cfg, dataset_names: Sequence[str]) -> bool:
    """Video clip loaders when ``INPUT.DATASET_MAPPER_NAME`` is ``VideoDatasetMapper`` or a
    dataset's metadata says ``evaluator_type="video"``."""
    if cfg.INPUT.DATASET_MAPPER_NAME == "VideoDatasetMapper":
        return True
    return any(n in MetadataCatalog and MetadataCatalog.get(n).get("evaluator_type") == "video" for n in dataset_names)


def build_video_val_loss_loader(cfg, dataset_name: str, per_process: int, world: int):
    """Validation-loss loader of a video dataset: the first ``NUM_BATCHES x per_process x
    world`` videos with objects, whole (every frame and object, no augmentation), as lists of
    ``per_process`` clip dicts (a video model collates them in training mode)."""
    register_shapes_video_from_cfg(cfg)
    dicts = get_video_dataset_dicts(dataset_name, on_bad_annotation=cfg.DATASETS.ON_BAD_ANNOTATION)
    return val_loss_loader_of(
        cfg, dicts, VideoDatasetMapper(cfg, is_train=False), dataset_name, per_process, world, "videos"
    )


register_loader_kind(
    LoaderKind(
        name="video",
        applies=uses_video_loader,
        train=build_video_train_loader,
        test=build_video_test_loader,
        val_loss=build_video_val_loss_loader,
    )
)
