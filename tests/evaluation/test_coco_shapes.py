"""COCOEvaluator on the built-in shapes_val (small, generated under a temporary
$SEGTRAIN_DATASETS): ground truth fed back as predictions gives AP 100."""

import numpy as np
import pytest
import torch

from segtrain.config import get_cfg
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.evaluation import COCOEvaluator, build_evaluator, inference_on_dataset
from segtrain.evaluation.coco_evaluation import RECALL_KEY
from segtrain.structures import BoxMode, Instances, segmentation_to_bitmask


@pytest.fixture
def small_shapes(tmp_path, tmp_datasets_root):
    from segtrain.data.datasets import builtin

    cfg = get_cfg()
    cfg.DATASETS.SHAPES.NUM_TRAIN = 2
    cfg.DATASETS.SHAPES.NUM_VAL = 6
    cfg.DATASETS.SHAPES.IMAGE_SIZE = 64
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    builtin.register_shapes_from_cfg(cfg)
    return cfg


class _GTModel(torch.nn.Module):
    """Returns each image's ground truth (from the dataset dicts) as predictions of score 1."""

    def __init__(self, dicts):
        super().__init__()
        self.by_id = {d["image_id"]: d for d in dicts}

    def forward(self, inputs):
        outs = []
        for x in inputs:
            d = self.by_id[x["image_id"]]
            h, w = d["height"], d["width"]
            anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            masks = (
                np.stack([segmentation_to_bitmask(a["segmentation"], h, w) for a in anns])
                if anns
                else np.zeros((0, h, w), bool)
            )
            boxes = BoxMode.convert(
                np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS
            )
            outs.append(
                {
                    "instances": Instances(
                        (h, w),
                        pred_masks=torch.as_tensor(masks),
                        pred_boxes=torch.as_tensor(boxes, dtype=torch.float32),
                        scores=torch.ones(len(anns)),
                        pred_classes=torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                    )
                }
            )
        return outs


def test_shapes_val_ground_truth_gives_ap_100(small_shapes):
    cfg = small_shapes
    dicts = DatasetCatalog.get("shapes_val")
    assert len(dicts) == 6
    evaluator = build_evaluator(cfg, "shapes_val")  # evaluator_type "coco" -> COCOEvaluator
    assert isinstance(evaluator, COCOEvaluator)
    loader = [[{"image_id": d["image_id"]}] for d in dicts]
    res = inference_on_dataset(_GTModel(dicts), loader, evaluator)
    for task in ("bbox", "segm"):
        assert res[task]["AP"] == pytest.approx(100.0)
        assert res[task][RECALL_KEY] == pytest.approx(100.0)
        present = {
            MetadataCatalog.get("shapes_val").thing_classes[a["category_id"]] for d in dicts for a in d["annotations"]
        }
        for name in present:
            assert res[task][f"AP-{name}"] == pytest.approx(100.0)
