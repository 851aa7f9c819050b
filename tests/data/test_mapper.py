"""InstanceDatasetMapper and the augmentations: output format, geometric consistency of
images / masks / boxes, LSJ size, bad images."""

import cv2
import numpy as np
import pytest
import torch

from segtrain.data import MAPPER_REGISTRY, InstanceDatasetMapper, build_mapper, load_coco_json
from segtrain.data.transforms import (
    ColorJitter,
    FixedSizeCrop,
    RandomCrop,
    RandomFlip,
    ResizeScale,
    ResizeShortestEdge,
    apply_augmentations,
    build_augmentations,
)
from segtrain.structures import Instances, masks_to_boxes
from segtrain.utils.errors import ConfigError, DatasetError


class _Always(RandomFlip):
    """RandomFlip with probability 1."""

    def __init__(self, **kw):
        super().__init__(prob=1.0, **kw)


def _dicts(coco_factory, **kw):
    json_file, root = coco_factory(**kw)
    return load_coco_json(json_file, root)


def _check_format(out, d):
    img, inst = out["image"], out["instances"]
    assert img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3
    h, w = img.shape[1:]
    assert isinstance(inst, Instances) and inst.image_size == (h, w)
    assert inst.gt_classes.dtype == torch.int64
    assert inst.gt_boxes.dtype == torch.float32 and inst.gt_boxes.shape == (len(inst), 4)
    assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (len(inst), h, w)
    assert (out["height"], out["width"], out["image_id"]) == (d["height"], d["width"], d["image_id"])
    assert torch.equal(inst.gt_boxes, masks_to_boxes(inst.gt_masks))


def test_output_format_rgb_and_crowd_dropped(coco_factory):
    dicts = _dicts(coco_factory)
    mapper = InstanceDatasetMapper(is_train=True, augmentations=[])
    out = mapper(dicts[0])
    _check_format(out, dicts[0])
    bgr = cv2.imread(dicts[0]["file_name"])
    assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), bgr[:, :, ::-1])
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert out["instances"].gt_boxes[0].tolist() == [10.0, 10.0, 30.0, 30.0]
    out2 = mapper(dicts[1])  # one instance + one crowd region
    assert len(out2["instances"]) == 1
    assert "annotations" not in out and dicts[0]["annotations"][0]["segmentation"]  # input untouched


@pytest.mark.parametrize("horizontal", [True, False])
def test_flip_moves_image_masks_and_boxes_together(coco_factory, horizontal):
    dicts = _dicts(coco_factory)
    plain = InstanceDatasetMapper(augmentations=[])
    flipped = InstanceDatasetMapper(augmentations=[_Always(horizontal=horizontal, vertical=not horizontal)])
    dim = 2 if horizontal else 1
    for d in dicts:
        a, b = plain(d), flipped(d)
        assert torch.equal(b["image"], a["image"].flip(dim))
        ma, mb = a["instances"].gt_masks, b["instances"].gt_masks
        for k, ann in enumerate(x for x in d["annotations"] if not x["iscrowd"]):
            if isinstance(ann["segmentation"], dict):  # RLE: warped exactly like the image
                assert torch.equal(mb[k], ma[k].flip(dim - 1))
            else:  # polygon: flipped coordinates, rasterized again
                inter = (mb[k] & ma[k].flip(dim - 1)).sum()
                union = (mb[k] | ma[k].flip(dim - 1)).sum()
                assert inter / union > 0.95
        size = 50 if horizontal else 40
        ba, bb = a["instances"].gt_boxes, b["instances"].gt_boxes
        i0, i1 = (0, 2) if horizontal else (1, 3)
        assert torch.allclose(bb[:, i0], size - ba[:, i1], atol=1) and torch.allclose(
            bb[:, i1], size - ba[:, i0], atol=1
        )


def test_resize_scales_polygons_exactly(coco_factory):
    dicts = _dicts(coco_factory)
    mapper = InstanceDatasetMapper(augmentations=[ResizeShortestEdge(80, 1000)])
    out = mapper(dicts[0])
    assert out["image"].shape == (3, 80, 100)
    assert out["instances"].gt_boxes[0].tolist() == [20.0, 20.0, 60.0, 60.0]
    m = out["instances"].gt_masks[0]
    assert m.sum() == 40 * 40 and m[20:60, 20:60].all()


def test_lsj_output_size_and_empty_masks_dropped(coco_factory):
    dicts = _dicts(coco_factory)
    np.random.seed(0)
    mapper = InstanceDatasetMapper(augmentations=[ResizeScale(0.5, 5.0, 64, 64), FixedSizeCrop((64, 64))])
    sizes = set()
    for _ in range(30):
        out = mapper(dicts[0])
        assert out["image"].shape == (3, 64, 64)
        inst = out["instances"]
        assert len(inst) <= 2 and bool(inst.gt_masks.flatten(1).any(1).all())
        sizes.add(len(inst))
        _check_format(out, dicts[0])
    assert len(sizes) > 1  # crops sometimes cut an instance away entirely


def test_crop_and_color_jitter(coco_factory):
    dicts = _dicts(coco_factory)
    np.random.seed(1)
    out = InstanceDatasetMapper(augmentations=[RandomCrop("absolute", (20, 25))])(dicts[0])
    assert out["image"].shape == (3, 20, 25)
    _check_format(out, dicts[0])
    img = np.full((8, 8, 3), 100, np.uint8)
    jittered, tfm = apply_augmentations([ColorJitter(0.5, 0.5, 0.5)], img)
    assert jittered.dtype == np.uint8 and jittered.shape == img.shape
    mask = np.eye(8, dtype=bool)
    assert np.array_equal(tfm.apply_segmentation(mask), mask)


def test_build_augmentations_from_cfg(tiny_cfg):
    train = build_augmentations(tiny_cfg, True)
    assert [type(a).__name__ for a in train] == ["ResizeShortestEdge", "RandomFlip"]
    tiny_cfg.INPUT.LSJ.ENABLED = True
    tiny_cfg.INPUT.LSJ.IMAGE_SIZE = 96
    tiny_cfg.INPUT.COLOR_JITTER.ENABLED = True
    names = [type(a).__name__ for a in build_augmentations(tiny_cfg, True)]
    assert names == ["RandomFlip", "ResizeScale", "FixedSizeCrop", "ColorJitter"]
    assert [type(a).__name__ for a in build_augmentations(tiny_cfg, False)] == ["ResizeShortestEdge"]
    tiny_cfg.INPUT.RANDOM_FLIP = "diagonal"
    with pytest.raises(ConfigError, match="RANDOM_FLIP.*horizontal"):
        build_augmentations(tiny_cfg, True)


def test_mapper_from_cfg_on_shapes_lsj(tiny_cfg):
    tiny_cfg.INPUT.LSJ.ENABLED = True
    tiny_cfg.INPUT.LSJ.IMAGE_SIZE = 96
    assert MAPPER_REGISTRY.get("InstanceDatasetMapper") is InstanceDatasetMapper
    mapper = build_mapper(tiny_cfg, is_train=True)
    from segtrain.data import DatasetCatalog, register_shapes_from_cfg

    register_shapes_from_cfg(tiny_cfg)
    d = DatasetCatalog.get("shapes_train")[0]
    out = mapper(d)
    assert out["image"].shape == (3, 96, 96)
    _check_format(out, d)


def test_bad_images(coco_factory, tmp_path):
    dicts = _dicts(coco_factory)
    mapper = InstanceDatasetMapper(augmentations=[])
    wrong = dict(dicts[0], height=41)
    with pytest.raises(DatasetError) as e:
        mapper(wrong)
    assert "a.jpg" in str(e.value) and "50x40" in str(e.value) and "50x41" in str(e.value)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg.*cannot be decoded"):
        mapper(dict(dicts[0], file_name=str(broken)))
    with pytest.raises(DatasetError, match="not found.*gone.jpg"):
        mapper(dict(dicts[0], file_name=str(tmp_path / "gone.jpg")))
    nan_img = np.full((40, 50, 3), 0.5, np.float32)
    nan_img[3, 4, 1] = np.nan
    path = str(tmp_path / "nan.tiff")
    assert cv2.imwrite(path, nan_img)
    with pytest.raises(DatasetError, match="nan.tiff.*NaN"):
        mapper(dict(dicts[0], file_name=path))
    skipping = InstanceDatasetMapper(augmentations=[], on_bad_annotation="skip")
    assert skipping(wrong) is None


def test_test_mapper_keeps_instances(tiny_cfg, coco_factory):
    dicts = _dicts(coco_factory)
    mapper = InstanceDatasetMapper(tiny_cfg, is_train=False)
    out = mapper(dicts[0])
    assert out["image"].shape == (3, 64, 80) and len(out["instances"]) == 2
    no_ann = {k: v for k, v in dicts[0].items() if k != "annotations"}
    assert "instances" not in mapper(no_ann)
