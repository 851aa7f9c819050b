"""projects/m2f/tiny.yaml trained on a small COCO panoptic dataset (things and stuff) through
DefaultTrainer, evaluated with PQ: the panoptic path from the PNGs to PanopticEvaluator."""
import json
import os

import cv2
import numpy as np
import pytest

from segtrain.config import load_config
from segtrain.data import DatasetCatalog, MetadataCatalog, register_coco_panoptic
from segtrain.engine import DefaultTrainer
from segtrain.utils.env import seed_all_rng

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
NAME = "_test_m2f_panoptic"


@pytest.fixture
def panoptic_dataset(tmp_path):
    """Six 64x64 images: a red square ("box", thing) and a blue disc ("ball", thing) on a green
    "field" (stuff), at random places."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "pan").mkdir()
    images, anns = [], []
    for i in range(6):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = (40, 160, 40)
        ids = np.full((64, 64), 1, np.int64)  # 1 = the field
        x, y = rng.integers(4, 28, size=2)
        ids[y:y + 20, x:x + 20] = 2
        cx, cy = rng.integers(40, 54, size=2)
        disc = np.zeros((64, 64), np.uint8)
        cv2.circle(disc, (int(cx), int(cy)), 9, 1, -1)
        ids[disc > 0] = 3
        img[ids == 2] = (200, 30, 30)
        img[ids == 3] = (30, 30, 200)
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), img[..., ::-1])
        rgb = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids)], -1).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "pan" / f"{i}.png"), rgb[..., ::-1])
        images.append({"id": i, "file_name": f"{i}.png", "height": 64, "width": 64})
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": [
            {"id": 1, "category_id": 30, "iscrowd": 0}, {"id": 2, "category_id": 10, "iscrowd": 0},
            {"id": 3, "category_id": 20, "iscrowd": 0}]})
    cats = [{"id": 10, "name": "box", "isthing": 1}, {"id": 20, "name": "ball", "isthing": 1},
            {"id": 30, "name": "field", "isthing": 0}]
    (tmp_path / "pan.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    register_coco_panoptic(NAME, {}, str(tmp_path / "images"), str(tmp_path / "pan"), str(tmp_path / "pan.json"))
    yield tmp_path
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


@pytest.mark.slow
def test_panoptic_training_and_pq_evaluation(panoptic_dataset):
    cfg = load_config(TINY, [
        "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", f"('{NAME}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "64", "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "True", "SOLVER.MAX_ITER", "40",
        "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0", "WRITERS.TENSORBOARD", "False",
        "TEST.VAL_LOSS.ENABLED", "False", "OUTPUT_DIR", str(panoptic_dataset / "out")])
    cfg.freeze()
    seed_all_rng(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    # the field is stuff: panoptic merging takes it from the training set's metadata
    assert trainer.model._thing_ids() == {0, 1}
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("core_loss").values()]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    res = DefaultTrainer.test(cfg, trainer.model)["panoptic_seg"]
    # every category is in the ground truth, so all three are scored (a prediction or not)
    assert res["num_categories"] == 3 and res["num_categories_st"] == 1
    assert res["PQ_st"] > 50.0  # the field is segmented as one stuff segment after 40 iterations (98 here)
    assert 0.0 < res["PQ"] <= 100.0
