"""load_coco_json on box-only COCO files (annotations with a bbox but no / an empty
segmentation): they load without a 'segmentation' key, an annotation with neither geometry
is a one-line error, and a file may mix both kinds (decided per annotation)."""

import logging

import pytest

from segtrain.data import bad_annotation_policy, load_coco_json
from segtrain.data.datasets.coco import has_segmentation
from segtrain.structures import BoxMode
from segtrain.utils.errors import DatasetError


def _box_only(data):
    """Every annotation keeps its bbox; the masks go ("segmentation" removed, [] or null)."""
    boxes = {11: [10, 10, 20, 20], 12: [25, 5, 20, 15], 21: [30, 20, 18, 15], 22: [0, 0, 10, 5]}
    for k, a in enumerate(data["annotations"]):
        a["bbox"] = boxes[a["id"]]
        if k % 3 == 0:
            del a["segmentation"]
        else:
            a["segmentation"] = [] if k % 3 == 1 else None


def _by_id(dicts):
    return {a["id"]: a for d in dicts for a in d["annotations"]}


def test_box_only_file_loads_without_segmentation(coco_factory, caplog):
    json_file, root = coco_factory(edit=_box_only)
    with caplog.at_level(logging.INFO, logger="segtrain.data.datasets.coco"):
        dicts = load_coco_json(json_file, root)
    anns = _by_id(dicts)
    assert sorted(anns) == [11, 12, 21, 22]
    for a in anns.values():
        assert "segmentation" not in a and a["bbox_mode"] == BoxMode.XYWH_ABS
    assert anns[12]["bbox"] == [25.0, 5.0, 20.0, 15.0] and anns[12]["category_id"] == 1
    assert anns[22]["iscrowd"] == 1
    assert "4 of 4 annotations are box-only" in caplog.text


def test_neither_segmentation_nor_bbox_is_a_one_line_error(coco_factory, caplog):
    def edit(data):
        _box_only(data)
        del data["annotations"][1]["bbox"]  # id 12: segmentation [] and no bbox

    json_file, root = coco_factory(edit=edit)
    with pytest.raises(DatasetError) as e:
        load_coco_json(json_file, root)
    msg = str(e.value)
    assert json_file in msg and "annotation id 12" in msg and "\n" not in msg
    assert "'segmentation'" in msg and "'bbox'" in msg
    with caplog.at_level(logging.WARNING, logger="segtrain.data.datasets.coco"):
        with bad_annotation_policy("skip"):
            dicts = load_coco_json(json_file, root)
    assert sorted(_by_id(dicts)) == [11, 21, 22]
    assert "Skipped 1 bad annotation(s)" in caplog.text


def test_a_bad_bbox_of_a_box_only_annotation_is_reported(coco_factory):
    def edit(data):
        _box_only(data)
        data["annotations"][2]["bbox"] = [1, 2, -3, 4]

    json_file, root = coco_factory(edit=edit)
    with pytest.raises(DatasetError, match=r"annotation id 21: bbox must be 4 finite numbers"):
        load_coco_json(json_file, root)


def test_mixed_file_keeps_masks_per_annotation(coco_factory):
    def edit(data):
        data["annotations"][1]["bbox"] = [25, 5, 20, 15]
        data["annotations"][1]["segmentation"] = []  # image 1: one mask, one box-only
        data["annotations"][2]["bbox"] = [30, 20, 18, 15]
        del data["annotations"][2]["segmentation"]  # image 2: box-only + a crowd RLE

    json_file, root = coco_factory(edit=edit)
    anns = _by_id(load_coco_json(json_file, root))
    assert [has_segmentation(anns[i]) for i in (11, 12, 21, 22)] == [True, False, False, True]
    assert "segmentation" not in anns[12] and "segmentation" not in anns[21]
    assert anns[11]["segmentation"] == [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]


def test_has_segmentation():
    assert not has_segmentation({}) and not has_segmentation({"segmentation": None})
    assert not has_segmentation({"segmentation": []}) and not has_segmentation({"segmentation": {}})
    assert has_segmentation({"segmentation": [[0, 0, 1, 0, 1, 1]]})
    assert has_segmentation({"segmentation": {"size": [2, 2], "counts": "04"}})
