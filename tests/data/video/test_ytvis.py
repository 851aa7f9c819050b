"""YouTube-VIS JSON loading: RLE / polygon / null frames, contiguous categories, metadata, and a
one-line DatasetError naming file, video, annotation and frame for each kind of bad input."""

import os

import numpy as np
import pytest

from segtrain.data import DatasetCatalog, MetadataCatalog
from segtrain.data.datasets.coco import bad_annotation_policy
from segtrain.data.datasets.ytvis import load_ytvis_json, register_ytvis_instances
from segtrain.evaluation.video_evaluation import video_gt_masks
from segtrain.utils.errors import DatasetError


def test_load_formats_and_metadata(ytvis_factory, ytvis_tools):
    json_file, root = ytvis_factory()
    name = "_test_ytvis_load"
    dicts = load_ytvis_json(json_file, root, name)
    assert [d["video_id"] for d in dicts] == [1, 2]
    v1 = dicts[0]
    assert (v1["height"], v1["width"], v1["length"]) == (24, 32, 3)
    assert v1["file_names"][1] == os.path.join(os.path.abspath(root), "v1/1.jpg")
    # categories 4, 8 -> 0, 1 (sorted ids)
    assert [a["category_id"] for a in v1["annotations"]] == [1, 0]
    track11, track12 = v1["annotations"]
    assert track11["segmentations"][2] is None and track12["segmentations"][0] is None
    ids, gt = video_gt_masks(v1)
    assert ids == [11, 12] and gt.shape == (3, 2, 24, 32)
    bm = ytvis_tools.box_mask
    assert np.array_equal(gt[0, 0], bm(0, 10, 0, 8))  # compressed RLE
    assert np.array_equal(gt[1, 0], bm(2, 10, 2, 12))  # polygon
    assert not gt[2, 0].any() and not gt[0, 1].any()  # null frames
    assert np.array_equal(gt[1, 1], bm(12, 20, 16, 30))  # uncompressed RLE
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["a", "b"] and meta.evaluator_type == "video"
    assert meta.thing_dataset_id_to_contiguous_id == {4: 0, 8: 1}


def test_register_is_lazy(ytvis_factory):
    json_file, root = ytvis_factory()
    name = "_test_ytvis_register"
    register_ytvis_instances(name, {"extra": 1}, json_file, root)
    assert MetadataCatalog.get(name).evaluator_type == "video"
    assert MetadataCatalog.get(name).extra == 1
    assert len(DatasetCatalog.get(name)) == 2


def _set(path, value):
    def edit(data):
        obj = data
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return edit


def _del(path):
    def edit(data):
        obj = data
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]

    return edit


@pytest.mark.parametrize(
    "edit, write, expected",
    [
        (_del(["videos"]), True, "missing required key 'videos'"),
        (_del(["videos", 0, "file_names"]), True, "video id 1: missing required key(s) file_names"),
        (_del(["annotations", 1, "segmentations"]), True, "annotation id 12: missing required key(s) segmentations"),
        (
            _set(["annotations", 0, "segmentations"], [None, None]),
            True,
            "video id 1 annotation id 11: 'segmentations' must list one entry per frame (3 frames), got 2 entries",
        ),
        (
            _set(["annotations", 2, "segmentations", 3, "size"], [20, 32]),
            True,
            "video id 2 annotation id 21 frame 3: RLE size [20, 32] differs",
        ),
        (_set(["annotations", 0, "category_id"], 99), True, "video id 1 annotation id 11: unknown category_id 99"),
        (_set(["videos", 0, "length"], 5), True, "video id 1: 'length' is 5 but 'file_names' lists 3 frames"),
        (None, False, "video id 1 frame 0: frame file not found"),
        (_set(["annotations", 0, "video_id"], 7), True, "annotation id 11: video_id 7 is not in 'videos'"),
    ],
)
def test_errors_are_one_line_and_named(ytvis_factory, edit, write, expected):
    json_file, root = ytvis_factory(edit=edit, write_frames=write)
    with pytest.raises(DatasetError) as e:
        load_ytvis_json(json_file, root)
    msg = str(e.value)
    assert "\n" not in msg and json_file in msg and expected in msg, msg


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [')
    with pytest.raises(DatasetError, match=r"bad.json: malformed JSON at line 1"):
        load_ytvis_json(str(bad), str(tmp_path))
    with pytest.raises(DatasetError, match="video annotation file not found"):
        load_ytvis_json(str(tmp_path / "nope.json"), str(tmp_path))


def test_skip_policy_drops_bad_track(ytvis_factory):
    json_file, root = ytvis_factory(edit=_set(["annotations", 0, "category_id"], 99))
    with bad_annotation_policy("skip"):
        dicts = load_ytvis_json(json_file, root)
    assert [a["id"] for a in dicts[0]["annotations"]] == [12]
