"""FindDatasetMapper: finds of an image, boxes from masks, box-only annotations without masks."""

import numpy as np
import pytest
import torch

import segtrain.modeling  # noqa: F401  (the model config keys the configs here read)
from segtrain.config import get_cfg
from segtrain.data.datasets.coco import load_coco_json
from segtrain.data.find import FindDatasetMapper, FindSampler
from segtrain.data.mappers import build_mapper
from segtrain.data.transforms.augmentation import RandomFlip, ResizeShortestEdge
from segtrain.structures.masks import BoxMode, masks_to_boxes
from segtrain.utils.errors import DatasetError


def _mapper(augs=(), negatives=-1, num_concepts=2):
    return FindDatasetMapper(True, augmentations=list(augs), find_sampler=FindSampler(num_concepts, negatives))


@pytest.fixture
def dicts(coco_factory):
    json_file, image_root = coco_factory()
    return load_coco_json(json_file, image_root)


def test_masks_boxes_and_finds(dicts):
    out = _mapper()(dicts[0])
    inst = out["instances"]
    assert out["image"].shape == (3, 40, 50) and out["image"].dtype == torch.uint8
    assert inst.gt_classes.tolist() == [0, 1]
    assert inst.gt_masks.shape == (2, 40, 50) and inst.gt_mask_valid.all()
    torch.testing.assert_close(inst.gt_boxes, masks_to_boxes(inst.gt_masks))
    assert out["find_categories"].tolist() == [0, 1] and out["find_is_exhaustive"].all()
    # image 2: the crowd region is dropped, so concept 0 is a presence negative
    out2 = _mapper()(dicts[1])
    assert out2["instances"].gt_classes.tolist() == [1]
    assert out2["find_categories"].tolist() == [1, 0]


def test_dataset_with_masks_but_no_boxes(dicts):
    d = dict(
        dicts[0],
        annotations=[{k: v for k, v in a.items() if k not in ("bbox", "bbox_mode")} for a in dicts[0]["annotations"]],
    )
    inst = _mapper()(d)["instances"]
    assert len(inst) == 2 and (inst.gt_boxes[:, 2:] > inst.gt_boxes[:, :2]).all()
    torch.testing.assert_close(inst.gt_boxes, masks_to_boxes(inst.gt_masks))


def test_box_only_annotations_have_no_masks(dicts):
    anns = [
        {"bbox": [10.0, 5.0, 20.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0},
        {"bbox": [0.0, 0.0, 4.0, 8.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0},
    ]
    d = dict(dicts[0], annotations=anns)
    inst = _mapper()(d)["instances"]
    assert not inst.has("gt_masks")
    torch.testing.assert_close(inst.gt_boxes, torch.tensor([[10.0, 5.0, 30.0, 15.0], [0.0, 0.0, 4.0, 8.0]]))
    # boxes follow the geometric augmentation: flipped, then resized x2
    np.random.seed(0)
    inst = _mapper([RandomFlip(prob=1.0), ResizeShortestEdge(80, 1000)])(d)["instances"]
    torch.testing.assert_close(inst.gt_boxes[0], torch.tensor([40.0, 10.0, 80.0, 30.0]))


def test_mixed_masks_and_boxes(dicts):
    anns = list(dicts[0]["annotations"][:1]) + [
        {"bbox": [30.0, 20.0, 10.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}
    ]
    inst = _mapper()(dict(dicts[0], annotations=anns))["instances"]
    assert inst.gt_mask_valid.tolist() == [True, False]
    assert inst.gt_masks[1].sum() == 0 and inst.gt_masks[0].sum() > 0


def test_bad_category_and_missing_geometry(dicts):
    d = dict(dicts[0], annotations=[dict(dicts[0]["annotations"][0], category_id=5)])
    with pytest.raises(DatasetError, match=r"outside \[0, 2\)"):
        _mapper()(d)
    d = dict(dicts[0], annotations=[{"id": 3, "category_id": 0, "iscrowd": 0}])
    with pytest.raises(DatasetError, match="annotation id 3 has neither 'segmentation' nor 'bbox'"):
        _mapper()(d)


def test_registered_and_built_from_config(dicts):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "FindDatasetMapper"
    cfg.INPUT.FIND.NUM_CONCEPTS = 2
    cfg.INPUT.FIND.NUM_NEGATIVES = 1
    cfg.INPUT.MIN_SIZE_TEST = 0
    train, test = build_mapper(cfg, is_train=True), build_mapper(cfg, is_train=False)
    assert isinstance(train, FindDatasetMapper) and train.find_sampler.num_negatives == 1
    assert test.find_sampler.num_negatives == -1  # TEST_NUM_NEGATIVES: every concept at test time
    assert test(dicts[1])["find_categories"].tolist() == [1, 0]
