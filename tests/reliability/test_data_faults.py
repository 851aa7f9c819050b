"""Every data fault (bad files, bad annotations, unreadable images) under both
DATASETS.ON_BAD_ANNOTATION policies, through the
config-driven loaders: "error" stops with one line naming the file and the annotation / image
id; "skip" drops the bad item and reports a count at the end (training loader, test loader and
the inference summary). Empty images train a real tiny Mask2Former without NaN."""

import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from segtrain.config import get_cfg, load_config
from segtrain.data import (
    DatasetCatalog,
    build_test_loader,
    build_train_loader,
    register_coco_instances,
)
from segtrain.data.mappers import InstanceDatasetMapper
from segtrain.evaluation.evaluator import inference_on_dataset
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.utils.errors import DatasetError
from segtrain.utils.imports import import_user_modules

H, W = 40, 50
NAME = "reliability_faults"
COMPONENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reliability_components.py")
TINY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "projects", "m2f", "tiny.yaml"
)


def _coco():
    """Three images: 1 with a polygon (id 11) and an RLE (id 12), 2 with a polygon (id 21),
    3 without any annotation."""
    blob = np.zeros((H, W), np.uint8)
    blob[5:20, 25:45] = 1
    rle = mask_util.encode(np.asfortranarray(blob))
    rle["counts"] = rle["counts"].decode("ascii")
    square = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]
    return {
        "images": [
            {"id": i, "file_name": f"{c}.png", "height": H, "width": W} for i, c in ((1, "a"), (2, "b"), (3, "c"))
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 5, "segmentation": [square], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 9, "segmentation": rle, "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 9, "segmentation": [square], "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
    }


def _nan_tiff(root):
    img = np.full((H, W, 3), 0.5, np.float32)
    img[3, 4, 1] = np.nan
    assert cv2.imwrite(os.path.join(root, "b.tiff"), img)


# name -> (stage where it is found, edit of the JSON data, edit of the image folder, words of the error)
FAULTS = {
    "unknown_category": (
        "load",
        lambda d: d["annotations"][2].update(category_id=77),
        None,
        ["annotation id 21", "unknown category_id 77", "valid: 5, 9"],
    ),
    "polygon_2_points": (
        "load",
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
        None,
        ["annotation id 11", "2 point(s); at least 3"],
    ),
    "rle_wrong_size": (
        "load",
        lambda d: d["annotations"][1]["segmentation"].update(size=[41, 50]),
        None,
        ["annotation id 12", "RLE size [41, 50] differs from the image size [40, 50]"],
    ),
    "missing_image": (
        "load",
        None,
        lambda root: os.remove(os.path.join(root, "b.png")),
        ["image id 2", "image file not found", "b.png"],
    ),
    "undecodable_image": (
        "map",
        None,
        lambda root: open(os.path.join(root, "b.png"), "wb").write(b"not a png"),
        ["b.png", "cannot be decoded"],
    ),
    "image_size_differs": (
        "map",
        None,
        lambda root: cv2.imwrite(os.path.join(root, "b.png"), np.zeros((45, W, 3), np.uint8)),
        ["b.png", "image id 2 is 50x45 (WxH) but the annotations say 50x40"],
    ),
    "nan_in_image": ("map", lambda d: d["images"][1].update(file_name="b.tiff"), _nan_tiff, ["b.tiff", "NaN"]),
}


def _register(tmp_path, fault=None, raw_json=None):
    root = tmp_path / "images"
    root.mkdir()
    data = _coco()
    rng = np.random.default_rng(0)
    for img in data["images"]:
        cv2.imwrite(str(root / img["file_name"]), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    if fault is not None:
        _, edit_json, edit_images, _ = FAULTS[fault]
        if edit_json:
            edit_json(data)
        if edit_images:
            edit_images(str(root))
    json_file = tmp_path / "instances.json"
    json_file.write_text(raw_json if raw_json is not None else json.dumps(data))
    register_coco_instances(NAME, {}, str(json_file), str(root))
    return str(json_file)


def _cfg(policy, **extra):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (NAME,)
    cfg.DATASETS.TEST = (NAME,)
    cfg.DATASETS.ON_BAD_ANNOTATION = policy
    cfg.INPUT.MIN_SIZE_TRAIN = (40,)
    cfg.INPUT.MIN_SIZE_TEST = 40
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = 3
    for k, v in extra.items():
        cfg.merge_from_list([k, v])
    return cfg


class _NoPredictions(torch.nn.Module):
    def forward(self, batch):
        return [{} for _ in batch]


def _train_batches(cfg, n):
    loader = build_train_loader(cfg)
    it = iter(loader)
    return loader, [next(it) for _ in range(n)]


def _one_line_with(err, words):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_malformed_json_is_one_line_under_both_policies(tmp_path, policy):
    json_file = _register(tmp_path, raw_json='{"images": [\n  {"id": 1,, }\n]}')
    with pytest.raises(DatasetError) as e:
        build_train_loader(_cfg(policy))
    _one_line_with(e, [json_file, "malformed JSON at line 2 column 12"])


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_error_policy_names_file_and_id(tmp_path, fault):
    stage, _, _, words = FAULTS[fault]
    json_file = _register(tmp_path, fault)
    cfg = _cfg("error")
    if stage == "load":
        with pytest.raises(DatasetError) as e:
            build_train_loader(cfg)
        _one_line_with(e, [json_file] + words)
        return
    with pytest.raises(DatasetError) as e:  # found when the image is read: within the first epoch
        _train_batches(cfg, 3)
    _one_line_with(e, words)
    with pytest.raises(DatasetError) as e:
        list(build_test_loader(cfg, NAME))
    _one_line_with(e, words)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_skip_policy_drops_the_item_and_counts_it(tmp_path, fault, records):
    stage = FAULTS[fault][0]
    _register(tmp_path, fault)
    cfg = _cfg("skip")
    loader, batches = _train_batches(cfg, 4)
    items = [x for b in batches for x in b]
    assert all(len(b) == 2 for b in batches)  # skipped items are replaced, batches stay full
    ids = [x["image_id"] for x in items]
    if fault == "unknown_category" or fault.startswith("polygon") or fault.startswith("rle"):
        assert "Skipped 1 bad annotation(s) and 0 bad image(s)" in records.text()
        kept = {x["image_id"]: len(x["instances"]) for x in items}
        assert kept.get(1, 1) + kept.get(2, 0) == 2  # the one bad annotation is gone, the others kept
        return
    assert 2 not in ids and set(ids) <= {1, 3}
    if stage == "load":
        assert "Skipped 0 bad annotation(s) and 1 bad image(s)" in records.text()
        assert loader.num_skipped == 0
    else:
        assert loader.num_skipped >= 1
        loader.log_skipped()
        assert f"Training skipped {loader.num_skipped} bad item(s)" in records.text()

    test_loader = build_test_loader(cfg, NAME)
    n_before = len(records.records)
    results = inference_on_dataset(_NoPredictions(), test_loader, None)
    assert results == {}
    assert test_loader.num_skipped == 1
    summary = "\n".join(r.getMessage() for r in records.records[n_before:])
    assert "2 image(s) mapped, 1 skipped as bad" in summary
    assert "for 2 images (+1 skipped as bad, DATASETS.ON_BAD_ANNOTATION='skip')" in summary


def test_trainer_logs_skipped_items_at_the_end(tmp_path, records):
    """DefaultTrainer reports the training loader's skip count when training ends."""
    from segtrain.engine import DefaultTrainer

    import_user_modules([COMPONENTS])
    _register(tmp_path, "undecodable_image")
    cfg = _cfg(
        "skip",
        **{
            "MODEL.META_ARCHITECTURE": "ReliabilityTestNet",
            "MODEL.DEVICE": "cpu",
            "SOLVER.MAX_ITER": "3",
            "SOLVER.CHECKPOINT_PERIOD": "100",
            "DATASETS.TEST": "()",
            "WRITERS.TENSORBOARD": "False",
            "OUTPUT_DIR": str(tmp_path / "out"),
        },
    )
    trainer = DefaultTrainer(cfg)
    trainer.train()
    skipped = trainer.data_loader.num_skipped
    assert skipped >= 1
    assert f"Training skipped {skipped} bad item(s) (DATASETS.ON_BAD_ANNOTATION='skip')" in records.text()


def test_empty_images_train_mask2former_without_nan(tmp_path):
    """A tiny Mask2Former (projects/m2f/tiny.yaml) on mapper outputs of images without instances,
    alone and mixed with an annotated one: every loss and every gradient is finite."""
    _register(tmp_path)
    dicts = DatasetCatalog.get(NAME)
    mapper = InstanceDatasetMapper(augmentations=[])
    empty, annotated = mapper(dicts[2]), mapper(dicts[0])
    assert len(empty["instances"]) == 0 and len(annotated["instances"]) == 2
    torch.manual_seed(0)
    model = build_model(load_config(TINY, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"])).train()
    for batch in ([empty, empty], [empty, annotated]):
        model.zero_grad(set_to_none=True)
        losses = model(batch)
        for k, v in losses.items():
            assert torch.isfinite(v).all(), (k, v)
        losses[CORE_LOSS_KEY].backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
