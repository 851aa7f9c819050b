"""Video data: clip sampling (frames and objects), the video mapper with clip-consistent
augmentation, ``BatchedVideoDatapoint`` and the video loader builders. Image datasets go
through the same path as one-frame clips."""

from . import config as _config  # noqa: F401  (registers the config keys)
from .build import VideoTrainDataLoader, build_video_test_loader, build_video_train_loader, get_video_dataset_dicts
from .clip_sampler import (
    OBJECT_SAMPLING_MODES,
    ClipSampler,
    as_video_dict,
    image_dict_to_video_dict,
    segmentation_present,
)
from .datapoint import BatchedVideoDatapoint, collate_video_clips
from .mapper import ResizeSquare, VideoDatasetMapper, build_video_augmentations

__all__ = [
    "BatchedVideoDatapoint",
    "collate_video_clips",
    "ClipSampler",
    "OBJECT_SAMPLING_MODES",
    "image_dict_to_video_dict",
    "as_video_dict",
    "segmentation_present",
    "VideoDatasetMapper",
    "ResizeSquare",
    "build_video_augmentations",
    "build_video_train_loader",
    "build_video_test_loader",
    "get_video_dataset_dicts",
    "VideoTrainDataLoader",
]
