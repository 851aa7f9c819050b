"""projects/m2f/tiny.yaml trained through DefaultTrainer on small datasets of segment maps --
COCO panoptic PNGs (things and stuff) and semantic label PNGs -- and evaluated with PQ and
mIoU: the paths from the PNGs to PanopticEvaluator and SemSegEvaluator."""

import json
import os

import cv2
import numpy as np
import pytest

from segtrain.config import load_config
from segtrain.data import register_coco_panoptic, register_sem_seg
from segtrain.engine import DefaultTrainer
from segtrain.utils.env import seed_all_rng

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
NAME = "_test_m2f_segment_maps"


def _scenes(n=6):
    """``n`` 64x64 (RGB image, label map): a red square (1, "box"), a blue disc (2, "ball")
    on a green field (0, "field"), at random places."""
    rng = np.random.default_rng(0)
    for _ in range(n):
        labels = np.zeros((64, 64), np.int64)
        x, y = rng.integers(4, 28, size=2)
        labels[y : y + 20, x : x + 20] = 1
        cx, cy = rng.integers(40, 54, size=2)
        disc = np.zeros((64, 64), np.uint8)
        cv2.circle(disc, (int(cx), int(cy)), 9, 1, -1)
        labels[disc > 0] = 2
        img = np.array([(40, 160, 40), (200, 30, 30), (30, 30, 200)], np.uint8)[labels]
        yield img, labels


@pytest.fixture
def panoptic_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "pan").mkdir()
    images, anns = [], []
    for i, (img, labels) in enumerate(_scenes()):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), img[..., ::-1])
        ids = labels + 1  # segment id = label + 1 (0 is void)
        rgb = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids)], -1).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "pan" / f"{i}.png"), rgb[..., ::-1])
        images.append({"id": i, "file_name": f"{i}.png", "height": 64, "width": 64})
        anns.append(
            {
                "image_id": i,
                "file_name": f"{i}.png",
                "segments_info": [
                    {"id": 1, "category_id": 30, "iscrowd": 0},
                    {"id": 2, "category_id": 10, "iscrowd": 0},
                    {"id": 3, "category_id": 20, "iscrowd": 0},
                ],
            }
        )
    cats = [
        {"id": 10, "name": "box", "isthing": 1},
        {"id": 20, "name": "ball", "isthing": 1},
        {"id": 30, "name": "field", "isthing": 0},
    ]
    (tmp_path / "pan.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    register_coco_panoptic(NAME, {}, str(tmp_path / "images"), str(tmp_path / "pan"), str(tmp_path / "pan.json"))
    return tmp_path


@pytest.fixture
def semantic_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i, (img, labels) in enumerate(_scenes()):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), img[..., ::-1])
        cv2.imwrite(str(tmp_path / "labels" / f"{i}.png"), labels.astype(np.uint8))
    register_sem_seg(
        NAME,
        {"stuff_classes": ["field", "box", "ball"]},
        str(tmp_path / "images"),
        str(tmp_path / "labels"),
        image_ext="png",
    )
    return tmp_path


def _train(out_dir, *opts):
    cfg = load_config(
        TINY,
        [
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "DATASETS.TEST",
            f"('{NAME}',)",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "3",
            "INPUT.MIN_SIZE_TRAIN",
            "(64,)",
            "INPUT.MAX_SIZE_TRAIN",
            "64",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.MAX_SIZE_TEST",
            "64",
            "SOLVER.MAX_ITER",
            "40",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            "TEST.EVAL_PERIOD",
            "0",
            "WRITERS.TENSORBOARD",
            "False",
            "TEST.VAL_LOSS.ENABLED",
            "False",
            "OUTPUT_DIR",
            str(out_dir),
            *opts,
        ],
    )
    cfg.freeze()
    seed_all_rng(cfg.SEED)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("core_loss").values()]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    return cfg, trainer


@pytest.mark.slow
def test_panoptic_training_and_pq_evaluation(panoptic_dataset):
    cfg, trainer = _train(
        panoptic_dataset / "out",
        "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
        "True",
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON",
        "True",
        "TEST.EVALUATOR",
        "('PanopticEvaluator', 'SemSegEvaluator', 'COCOEvaluator')",
    )
    # the field is stuff: panoptic merging takes it from the training set's metadata
    assert trainer.model._thing_ids() == {0, 1}
    results = DefaultTrainer.test(cfg, trainer.model)
    # the three evaluators run together: semantic GT is painted from the panoptic PNGs, and
    # instance GT is their thing segments
    assert results["sem_seg"]["IoU-field"] > 50.0
    assert set(results) == {"panoptic_seg", "sem_seg", "bbox", "segm"} and results["segm"]["AP"] > 0.0
    res = results["panoptic_seg"]
    # every category is in the ground truth, so all three are scored (a prediction or not)
    assert res["num_categories"] == 3 and res["num_categories_st"] == 1
    assert res["PQ_st"] > 50.0  # the field is segmented as one stuff segment after 40 iterations (98 here)
    assert 0.0 < res["PQ"] <= 100.0


@pytest.mark.slow
def test_semantic_training_and_miou_evaluation(semantic_dataset):
    cfg, trainer = _train(
        semantic_dataset / "out",
        "MODEL.MASK_FORMER.TEST.SEMANTIC_ON",
        "True",
        "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
        "False",
    )
    res = DefaultTrainer.test(cfg, trainer.model)["sem_seg"]
    assert res["IoU-field"] > 50.0 and res["mIoU"] > 50.0  # 95 here: the three classes are learned


def test_eval_only_takes_the_stuff_classes_from_the_test_set(panoptic_dataset):
    """Evaluating a panoptic checkpoint where the training set is not registered: the model
    still knows which classes are stuff, from DATASETS.TEST."""
    from segtrain.modeling import build_model

    cfg = load_config(
        TINY,
        [
            "DATASETS.TRAIN",
            "('coco_2017_train_panoptic',)",
            "DATASETS.TEST",
            f"('{NAME}',)",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "3",
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
            "True",
        ],
    )
    assert build_model(cfg)._thing_ids() == {0, 1}
