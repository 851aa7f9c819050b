"""collate_find_targets: the packed SAM 3 targets of a batch of finds, with and without masks."""

import pytest
import torch

from segtrain.data.find import collate_find_targets, find_batch_from_inputs
from segtrain.modeling.criterion import Boxes, IABCEMdetr, Masks, Sam3LossWrapper
from segtrain.modeling.matcher import BinaryHungarianMatcherV2
from segtrain.structures import Instances
from segtrain.utils.errors import DatasetError


def _input(classes, boxes, size=(20, 30), masks=True, finds=(), valid=None):
    inst = Instances(size)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if masks:
        m = torch.zeros(len(classes), *size, dtype=torch.bool)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            m[i, int(y0) : int(y1), int(x0) : int(x1)] = True
        inst.gt_masks = m
        inst.gt_mask_valid = torch.ones(len(classes), dtype=torch.bool) if valid is None else torch.tensor(valid)
    return {"image_id": 0, "instances": inst, "find_categories": torch.tensor(finds, dtype=torch.int64)}


def test_packed_targets_per_find():
    batch = [
        _input([2, 0, 2], [[0, 0, 10, 10], [5, 5, 15, 20], [20, 0, 30, 8]], finds=[0, 2, 1]),
        _input([1], [[2, 2, 6, 6]], size=(16, 32), finds=[1, 3]),
    ]
    fb = collate_find_targets(batch, (32, 32))
    assert fb.image_index.tolist() == [0, 0, 0, 1, 1] and fb.concepts.tolist() == [0, 2, 1, 1, 3]
    t = fb.targets
    assert t["num_boxes"].tolist() == [1, 2, 0, 1, 0]
    assert t["labels"].tolist() == [0, 2, 2, 1]
    # normalized by the padded size (32, 32)
    torch.testing.assert_close(t["boxes_xyxy"][1], torch.tensor([0.0, 0.0, 10 / 32, 10 / 32]))
    torch.testing.assert_close(t["boxes"][0], torch.tensor([10 / 32, 12.5 / 32, 10 / 32, 15 / 32]))
    assert t["boxes_padded"].shape == (5, 2, 4)
    assert t["object_ids_padded"].tolist() == [[0, -1], [0, 1], [-1, -1], [0, -1], [-1, -1]]
    assert t["masks"].shape == (4, 32, 32) and t["masks"][3, 16:].sum() == 0  # padded image 2
    assert t["is_valid_mask"].all() and t["is_exhaustive"].tolist() == [True] * 5


def test_box_only_batch_has_no_masks_and_trains():
    batch = [_input([0, 1], [[0, 0, 10, 10], [12, 4, 28, 18]], masks=False, finds=[0, 1, 2])]
    fb = collate_find_targets(batch, (20, 30))
    assert fb.targets["masks"] is None and not fb.targets["is_valid_mask"].any()
    torch.manual_seed(0)
    B, Q = 3, 5
    logits = torch.randn(B, Q, 1, requires_grad=True)
    boxes = torch.rand(B, Q, 4) * 0.5 + 0.25
    out = {
        "pred_logits": logits,
        "pred_boxes": boxes,
        "pred_masks": torch.randn(B, Q, 5, 8),
        "presence_logit_dec": torch.zeros(B, 1),
    }
    crit = Sam3LossWrapper(
        [
            Boxes({"loss_bbox": 5.0, "loss_giou": 2.0}),
            IABCEMdetr(
                10.0, {"loss_ce": 20.0, "presence_loss": 20.0}, use_presence=True, pad_n_queries=200, weak_loss=False
            ),
            Masks({"loss_mask": 200.0, "loss_dice": 10.0}),
        ],
        matcher=BinaryHungarianMatcherV2(2.0, 5.0, 2.0, focal=True),
    )
    losses = crit(out, fb.targets)
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_dice"]) == 0.0
    assert float(losses["loss_bbox"]) > 0 and torch.isfinite(losses["core_loss"])
    losses["core_loss"].backward()
    assert logits.grad is not None


def test_mixed_batch_masks_off_for_box_only_rows():
    batch = [
        _input([0], [[0, 0, 4, 4]], finds=[0]),
        _input([0], [[1, 1, 5, 5]], masks=False, finds=[0]),
        _input([1, 1], [[0, 0, 3, 3], [4, 4, 8, 8]], finds=[1], valid=[True, False]),
    ]
    t = collate_find_targets(batch, (20, 30)).targets
    assert t["masks"].shape == (4, 20, 30)
    assert t["is_valid_mask"].tolist() == [True, False, True, False]


def test_errors_name_the_input():
    with pytest.raises(DatasetError, match="input 0 .*no 'find_categories'.*FindDatasetMapper"):
        find_batch_from_inputs([{"image_id": 7}])
    with pytest.raises(DatasetError, match="input 0 .*no 'instances'"):
        collate_find_targets([{"image_id": 7, "find_categories": torch.tensor([0])}], (8, 8))
