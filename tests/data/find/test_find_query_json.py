"""The SA-Co-style find-query json (one ``images`` entry per image + text query): the vocabulary
of queries, normalized boxes, RLE masks, presence-negative pairs, the fixed finds the mapper
uses, registration, and one-line errors naming the file and the entry."""

import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from segtrain.data import DatasetCatalog, MetadataCatalog
from segtrain.data import register_find_query_json as reexported
from segtrain.data.find import FindDatasetMapper, FindSampler, load_find_query_json, register_find_query_json
from segtrain.utils.errors import DatasetError

H, W = 40, 50


def _rle(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def _saco():
    """Two images, three pairs: "red mug" (2 objects, one a crowd), "a cat" (none: a presence
    negative) on the same image, and "red mug" again on a second, non-exhaustive image."""
    images = [
        {"id": 10, "file_name": "a.jpg", "height": H, "width": W, "text_input": "red mug", "queried_category": "3"},
        {"id": 11, "file_name": "a.jpg", "height": H, "width": W, "text_input": "a cat", "is_instance_exhaustive": 1},
        {"id": 12, "file_name": "b.jpg", "height": H, "width": W, "text_input": "red mug", "is_instance_exhaustive": 0},
    ]
    annotations = [
        {"id": 1, "image_id": 10, "bbox": [0.1, 0.25, 0.2, 0.5], "segmentation": _rle(5, 10, 15, 30), "iscrowd": 0},
        {"id": 2, "image_id": 10, "bbox": [0.5, 0.0, 0.4, 0.25], "segmentation": _rle(25, 0, 45, 10), "is_crowd": 1},
        {"id": 3, "image_id": 12, "bbox": [0.0, 0.0, 0.5, 0.5], "category_id": 1},
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


@pytest.fixture
def saco_files(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / name), np.full((H, W, 3), 128, np.uint8))

    def write(data=None):
        path = tmp_path / "saco.json"
        path.write_text(json.dumps(data if data is not None else _saco()))
        return str(path), str(tmp_path)

    return write


def test_pairs_vocabulary_and_boxes(saco_files):
    json_file, root = saco_files()
    dicts = load_find_query_json(json_file, root, "_test_saco_load")
    assert MetadataCatalog.get("_test_saco_load").thing_classes == ["a cat", "red mug"]
    assert [d["image_id"] for d in dicts] == [10, 11, 12]
    assert [d["find_categories"] for d in dicts] == [[1], [0], [1]]
    assert [d["find_is_exhaustive"] for d in dicts] == [[True], [True], [False]]
    first = dicts[0]["annotations"]
    assert first[0]["bbox"] == pytest.approx([5.0, 10.0, 10.0, 20.0])  # normalized -> pixels
    assert first[0]["category_id"] == 1 and first[1]["iscrowd"] == 1 and "segmentation" in first[0]
    assert dicts[1]["annotations"] == []  # presence negative
    assert "segmentation" not in dicts[2]["annotations"][0]  # box-only
    assert dicts[0]["file_name"] == dicts[1]["file_name"]


def test_mapper_uses_the_given_finds(saco_files):
    json_file, root = saco_files()
    dicts = load_find_query_json(json_file, root)
    mapper = FindDatasetMapper(True, find_sampler=FindSampler(2, num_negatives=-1))
    out = mapper(dicts[0])
    assert out["find_categories"].tolist() == [1] and out["find_is_exhaustive"].tolist() == [True]
    assert out["instances"].gt_classes.tolist() == [1]  # the crowd region is dropped
    out = mapper(dicts[1])
    assert out["find_categories"].tolist() == [0] and len(out["instances"]) == 0
    assert mapper(dicts[2])["find_is_exhaustive"].tolist() == [False]
    with pytest.raises(DatasetError, match=r"image_id 10: find_categories \[1\] outside \[0, 1\)"):
        FindDatasetMapper(True, find_sampler=FindSampler(1))(dicts[0])
    capped = FindDatasetMapper(True, find_sampler=FindSampler(2, max_objects_per_find=1))
    two = dict(dicts[0], annotations=[dict(a, iscrowd=0) for a in dicts[0]["annotations"]])
    assert capped(two)["find_categories"].tolist() == []  # its one find has 2 objects


def test_registered(saco_files):
    json_file, root = saco_files()
    assert reexported is register_find_query_json
    register_find_query_json("_test_saco", json_file, root)
    assert len(DatasetCatalog.get("_test_saco")) == 3
    meta = MetadataCatalog.get("_test_saco")
    assert meta.evaluator_type == "FindEvaluator" and meta.thing_classes == ["a cat", "red mug"]
    assert not hasattr(meta, "json_file")  # evaluators convert the dicts (one COCO image per pair)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["images"][1].pop("text_input"), r"image-query pair id 11: missing required key\(s\) text_input"),
        (lambda d: d["images"][0].update(text_input=""), "pair id 10: text_input must be a non-empty string"),
        (lambda d: d["images"][2].update(file_name="c.jpg"), "pair id 12: image file not found"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation id 1: image_id 99 is not an image-query pair"),
        (
            lambda d: d["annotations"][2].update(bbox=[0, 0, 25, 20]),
            r"annotation id 3 \(pair id 12\): bbox .* normalized",
        ),
        (
            lambda d: d["annotations"][0].update(segmentation={"size": [1, 1]}),
            "annotation id 1 .* needs 'size' and 'counts'",
        ),
        (lambda d: d["images"].append(dict(d["images"][0])), "image-query pair id 10 is used twice"),
    ],
)
def test_bad_entries_are_one_line_errors(saco_files, edit, message):
    data = _saco()
    edit(data)
    json_file, root = saco_files(data)
    with pytest.raises(DatasetError, match=message) as e:
        load_find_query_json(json_file, root)
    assert str(e.value).startswith(json_file) and "\n" not in str(e.value)


def test_pixel_boxes(saco_files):
    data = _saco()
    data["annotations"][2]["bbox"] = [0, 0, 25, 20]
    json_file, root = saco_files(data)
    dicts = load_find_query_json(json_file, root, normalized_boxes=False)
    assert dicts[2]["annotations"][0]["bbox"] == [0.0, 0.0, 25.0, 20.0]
