"""A box-only COCO file through FindDatasetMapper and collate_find_targets: no masks, so the
packed targets have ``masks`` None and no valid mask row; a mixed file keeps the masks it has."""

import numpy as np
import torch

from segtrain.data.datasets.coco import load_coco_json
from segtrain.data.find import FindDatasetMapper, FindSampler, collate_find_targets
from segtrain.data.transforms.augmentation import ResizeShortestEdge


def _strip_masks(data):
    for a, box in zip(data["annotations"], ([10, 10, 20, 20], [25, 5, 20, 15], [30, 20, 18, 15], [0, 0, 10, 5])):
        a["bbox"] = box
        a["segmentation"] = []
    del data["annotations"][0]["segmentation"]


def _mapper(augs=()):
    return FindDatasetMapper(True, augmentations=list(augs), find_sampler=FindSampler(2, -1))


def test_box_only_file_gives_masks_none(coco_factory):
    json_file, root = coco_factory(edit=_strip_masks)
    dicts = load_coco_json(json_file, root)
    np.random.seed(0)
    outs = [_mapper([ResizeShortestEdge(80, 1000)])(d) for d in dicts]  # x2
    inst = outs[0]["instances"]
    assert not inst.has("gt_masks") and not inst.has("gt_mask_valid")
    torch.testing.assert_close(inst.gt_boxes, torch.tensor([[20.0, 20, 60, 60], [50, 10, 90, 40]]))
    assert outs[1]["instances"].gt_classes.tolist() == [1]  # the crowd box is dropped
    fb = collate_find_targets(outs, (80, 100))
    t = fb.targets
    assert t["masks"] is None
    assert t["is_valid_mask"].shape == (3,) and not t["is_valid_mask"].any()
    assert fb.concepts.tolist() == [0, 1, 1, 0] and t["num_boxes"].tolist() == [1, 1, 1, 0]
    torch.testing.assert_close(t["boxes_xyxy"][0], torch.tensor([0.2, 0.25, 0.6, 0.75]))


def test_mixed_file_masks_only_where_annotated(coco_factory):
    def edit(data):
        data["annotations"][1]["bbox"] = [25, 5, 20, 15]
        data["annotations"][1]["segmentation"] = []

    json_file, root = coco_factory(edit=edit)
    dicts = load_coco_json(json_file, root)
    outs = [_mapper()(d) for d in dicts]
    inst = outs[0]["instances"]
    assert inst.gt_mask_valid.tolist() == [True, False] and inst.gt_masks[1].sum() == 0
    torch.testing.assert_close(inst.gt_boxes[1], torch.tensor([25.0, 5, 45, 20]))
    t = collate_find_targets(outs, (40, 50)).targets
    assert t["masks"].shape == (3, 40, 50)
    # rows in find order: image 1 concept 0 (mask), concept 1 (box-only); image 2 concept 1 (mask)
    assert t["is_valid_mask"].tolist() == [True, False, True]
