"""COCO panoptic loading and registration, panoptic / semantic targets in the mapper
(Mask2Former's: one mask per non-crowd segment, one per class present), empty-image filter."""

import json

import cv2
import numpy as np
import pytest

from segtrain.data import DatasetCatalog, InstanceDatasetMapper, MetadataCatalog, get_dataset_dicts
from segtrain.data.datasets.coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from segtrain.data.transforms import FixedSizeCrop, RandomFlip, ResizeShortestEdge
from segtrain.data.visualize import draw_dataset_dict
from segtrain.utils.errors import DatasetError
from segtrain.utils.visualizer import Visualizer

CATEGORIES = [
    {"id": 1, "name": "cat", "isthing": 1},
    {"id": 5, "name": "dog", "isthing": 1},
    {"id": 100, "name": "grass", "isthing": 0},
]


def _ids_to_png(path, ids):
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture
def panoptic_folder(tmp_path):
    """Two 8x12 images. Image 1: segment 300 "cat" (a 256+ id, to test the G channel), 7 "dog"
    (crowd), 9 "grass" (stuff), void elsewhere. Image 2: only a crowd segment."""
    (tmp_path / "images").mkdir()
    (tmp_path / "pan").mkdir()
    ids = np.zeros((8, 12), np.int64)
    ids[:4, :6] = 300
    ids[:4, 6:] = 7
    ids[4:, :] = 9
    _ids_to_png(tmp_path / "pan" / "a.png", ids)
    _ids_to_png(tmp_path / "pan" / "b.png", np.full((8, 12), 4, np.int64))
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / "images" / name), np.full((8, 12, 3), 90, np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 8, "width": 12},
            {"id": 2, "file_name": "b.jpg", "height": 8, "width": 12},
        ],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "a.png",
                "segments_info": [
                    {"id": 300, "category_id": 1, "iscrowd": 0},
                    {"id": 7, "category_id": 5, "iscrowd": 1},
                    {"id": 9, "category_id": 100, "iscrowd": 0},
                ],
            },
            {"image_id": 2, "file_name": "b.png", "segments_info": [{"id": 4, "category_id": 5, "iscrowd": 1}]},
        ],
        "categories": CATEGORIES,
    }
    (tmp_path / "panoptic.json").write_text(json.dumps(data))
    return tmp_path


def test_load_and_register(panoptic_folder):
    root = panoptic_folder
    name = "_test_coco_panoptic"
    register_coco_panoptic(name, {}, str(root / "images"), str(root / "pan"), str(root / "panoptic.json"))
    meta = MetadataCatalog.get(name)  # categories known before any image is read
    assert meta.stuff_classes == ["cat", "dog", "grass"] and meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 5: 1} and meta.evaluator_type == "panoptic_seg"
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert dicts[0]["pan_seg_file_name"] == str(root / "pan" / "a.png")
    assert [(s["id"], s["category_id"], s["iscrowd"]) for s in dicts[0]["segments_info"]] == [
        (300, 0, 0),
        (7, 1, 1),
        (9, 2, 0),
    ]
    # the empty-image filter keeps images with a non-crowd segment and drops crowd-only ones
    assert [d["image_id"] for d in get_dataset_dicts([name], filter_empty=True)] == [1]
    # tools/visualize_data.py draws the segments (stuff included) in their class colours
    drawn = draw_dataset_dict(Visualizer(np.full((8, 12, 3), 90, np.uint8), meta, alpha=1.0), dicts[0])
    assert (drawn != 90).any(axis=-1).mean() > 0.9


def test_unknown_category_and_image_are_one_line_errors(panoptic_folder):
    data = json.loads((panoptic_folder / "panoptic.json").read_text())
    data["annotations"][0]["segments_info"][0]["category_id"] = 42
    bad = panoptic_folder / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(
        DatasetError, match=r"bad.json: image_id 1 segment 300 has category_id 42; valid ids: 1, 5, 100"
    ):
        load_coco_panoptic_json(str(bad), "images", "pan")
    data["annotations"][0]["segments_info"][0]["category_id"] = 1
    data["annotations"][1]["image_id"] = 77
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="'b.png' is for image_id 77, which is not in 'images'"):
        load_coco_panoptic_json(str(bad), "images", "pan")
    with pytest.raises(DatasetError, match="panoptic annotation file not found"):
        register_coco_panoptic("_never", {}, "images", "pan", str(panoptic_folder / "missing.json"))


def test_mapper_panoptic_targets_follow_the_augmentation(panoptic_folder):
    root = panoptic_folder
    d = load_coco_panoptic_json(str(root / "panoptic.json"), str(root / "images"), str(root / "pan"))[0]
    mapper = InstanceDatasetMapper(True, augmentations=[ResizeShortestEdge(16, 24), RandomFlip(prob=1.0)])
    inst = mapper(d)["instances"]
    assert inst.image_size == (16, 24)
    assert inst.gt_classes.tolist() == [0, 2]  # the cat and the grass; the crowd dog is not a target
    cat = np.zeros((16, 24), bool)
    cat[:8, 12:] = True  # top-left quarter, doubled, then flipped to the right
    grass = np.zeros((16, 24), bool)
    grass[8:, :] = True
    assert np.array_equal(inst.gt_masks[0].numpy(), cat) and np.array_equal(inst.gt_masks[1].numpy(), grass)
    assert inst.gt_boxes[0].tolist() == [12.0, 0.0, 24.0, 8.0]


def test_mapper_semantic_targets_one_per_class_padding_ignored(tmp_path):
    labels = np.full((6, 6), 255, np.uint8)
    labels[:3] = 2
    labels[3:, :2] = 0
    cv2.imwrite(str(tmp_path / "sem.png"), labels)
    cv2.imwrite(str(tmp_path / "img.jpg"), np.zeros((6, 6, 3), np.uint8))
    d = {
        "file_name": str(tmp_path / "img.jpg"),
        "image_id": 3,
        "height": 6,
        "width": 6,
        "sem_seg_file_name": str(tmp_path / "sem.png"),
    }
    inst = InstanceDatasetMapper(True, augmentations=[FixedSizeCrop((8, 8))])(d)["instances"]
    assert inst.gt_classes.tolist() == [0, 2]
    assert inst.gt_masks.shape == (2, 8, 8)
    assert int(inst.gt_masks[0].sum()) == 6 and int(inst.gt_masks[1].sum()) == 18  # padding is no class
    with pytest.raises(DatasetError, match="missing.png: semantic label PNG cannot be read"):
        InstanceDatasetMapper(True)(dict(d, sem_seg_file_name=str(tmp_path / "missing.png")))


def test_builtin_coco_panoptic_registration(tmp_path):
    """<root>/coco present: coco_2017_{train,val}_panoptic are registered with the 133-category
    metadata from the built-in table (no JSON read); loading checks the JSON against it."""
    from segtrain.config import load_config
    from segtrain.data.datasets.builtin import register_coco_2017
    from segtrain.data.datasets.coco_panoptic_categories import coco_panoptic_categories
    from segtrain.engine.startup_check import check_config

    coco = tmp_path / "coco"
    for d in ("val2017", "panoptic_val2017", "annotations"):
        (coco / d).mkdir(parents=True)
    cv2.imwrite(str(coco / "val2017" / "1.jpg"), np.zeros((8, 12, 3), np.uint8))
    _ids_to_png(coco / "panoptic_val2017" / "1.png", np.full((8, 12), 5, np.int64))
    data = {
        "images": [{"id": 1, "file_name": "1.jpg", "height": 8, "width": 12}],
        "annotations": [
            {"image_id": 1, "file_name": "1.png", "segments_info": [{"id": 5, "category_id": 187, "iscrowd": 0}]}
        ],
        "categories": coco_panoptic_categories(),
    }
    (coco / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    register_coco_2017(str(tmp_path))
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert len(meta.stuff_classes) == 133 and len(meta.thing_classes) == 80
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79 and meta.stuff_classes[80] == "banner"
    (d,) = DatasetCatalog.get("coco_2017_val_panoptic")
    assert d["segments_info"][0]["category_id"] == meta.stuff_classes.index("sky-other-merged") == 119
    cfg = load_config("projects/m2f/r50_coco_panoptic.yaml")
    assert check_config(cfg, train=False) == []  # 133 classes, PNG folder, evaluators and switches agree
    data["categories"][0]["name"] = "human"  # a JSON that disagrees with the table is a loud error
    (coco / "annotations" / "panoptic_val2017.json").write_text(json.dumps(data))
    register_coco_2017(str(tmp_path))
    with pytest.raises(DatasetError, match="'stuff_classes' of dataset 'coco_2017_val_panoptic' is already"):
        DatasetCatalog.get("coco_2017_val_panoptic")
