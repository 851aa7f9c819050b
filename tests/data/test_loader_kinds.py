"""Loader kinds: the engine asks ``select_loader_kind`` which builders serve a dataset."""

import pytest

import segtrain.modeling  # noqa: F401  (registers the config nodes)
from segtrain.config import get_cfg
from segtrain.data import MetadataCatalog, build_test_loader, build_train_loader, build_val_loss_loader
from segtrain.data.loader_kinds import _KINDS, LoaderKind, register_loader_kind, select_loader_kind
from segtrain.data.video import build_video_test_loader, build_video_train_loader


def test_images_by_default_and_video_by_mapper_or_metadata():
    cfg = get_cfg()
    image = select_loader_kind(cfg, ["shapes_train"])
    assert image.name == "image" and image.train is build_train_loader and image.test is build_test_loader
    assert image.val_loss is build_val_loss_loader
    # a video dataset (evaluator_type "video") takes the clip loaders even with the image mapper
    assert MetadataCatalog.get("shapes_video_val").evaluator_type == "video"
    video = select_loader_kind(cfg, ["shapes_video_val"])
    assert video.name == "video" and video.train is build_video_train_loader and video.test is build_video_test_loader
    cfg.INPUT.DATASET_MAPPER_NAME = "VideoDatasetMapper"
    assert select_loader_kind(cfg, ["shapes_train"]).name == "video"


def test_registered_kind_is_asked_before_images_and_names_are_unique():
    kind = LoaderKind(
        name="probe",
        applies=lambda cfg, names: "probe_ds" in names,
        train=lambda cfg: "train",
        test=lambda cfg, n: "test",
        val_loss=lambda cfg, n, p, w: "val",
    )
    register_loader_kind(kind)
    try:
        assert select_loader_kind(get_cfg(), ["probe_ds"]) is kind
        assert select_loader_kind(get_cfg(), ["shapes_val"]).name == "image"
        with pytest.raises(KeyError, match="probe"):
            register_loader_kind(kind)
    finally:
        _KINDS.remove(kind)
