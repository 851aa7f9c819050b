"""Semantic segmentation folders: images and label PNGs paired by relative stem."""

import cv2
import numpy as np
import pytest

from segtrain.data import DatasetCatalog, MetadataCatalog, register_sem_seg
from segtrain.data.datasets.sem_seg import load_sem_seg
from segtrain.utils.errors import DatasetError


def _folder(tmp_path, stems_img, stems_gt):
    for stem in stems_img:
        (tmp_path / "img" / stem).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "img" / f"{stem}.jpg"), np.zeros((4, 4, 3), np.uint8))
    for stem in stems_gt:
        (tmp_path / "gt" / stem).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "gt" / f"{stem}.png"), np.zeros((4, 4), np.uint8))
    return str(tmp_path / "gt"), str(tmp_path / "img")


def test_pairs_by_relative_stem_and_registers(tmp_path):
    gt, img = _folder(tmp_path, ["a", "city/b"], ["a", "city/b"])
    dicts = load_sem_seg(gt, img)
    assert [(d["image_id"], d["sem_seg_file_name"]) for d in dicts] == [
        ("a", f"{gt}/a.png"),
        ("city/b", f"{gt}/city/b.png"),
    ]
    register_sem_seg("_test_semseg_folder", {"stuff_classes": ["x"]}, img, gt)
    assert MetadataCatalog.get("_test_semseg_folder").evaluator_type == "sem_seg"
    assert len(DatasetCatalog.get("_test_semseg_folder")) == 2


def test_unpaired_files_missing_folders_and_classes_are_one_line_errors(tmp_path):
    gt, img = _folder(tmp_path, ["a", "b"], ["a"])
    with pytest.raises(DatasetError, match=r"img/b.jpg has no counterpart under .*gt.* \(1 files"):
        load_sem_seg(gt, img)
    with pytest.raises(DatasetError, match="label folder not found: '.*nowhere'"):
        load_sem_seg(str(tmp_path / "nowhere"), img)
    with pytest.raises(DatasetError, match="metadata needs 'stuff_classes'"):
        register_sem_seg("_never", {}, img, gt)
