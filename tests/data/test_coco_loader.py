"""load_coco_json / register_coco_instances: formats, contiguous ids, and one-line errors
that name the file and the annotation id, under both bad-annotation policies."""

import logging
import os

import pytest

from segtrain.data import (
    DatasetCatalog,
    MetadataCatalog,
    bad_annotation_policy,
    load_coco_json,
    register_coco_instances,
)
from segtrain.structures import BoxMode, segmentation_to_bitmask
from segtrain.utils.errors import DatasetError


def _by_id(dicts):
    return {a["id"]: a for d in dicts for a in d["annotations"]}


def test_polygons_and_rle_load(coco_factory):
    json_file, root = coco_factory()
    dicts = load_coco_json(json_file, root, "test_coco_formats")
    assert [d["image_id"] for d in dicts] == [1, 2]
    d0 = dicts[0]
    assert os.path.isabs(d0["file_name"]) and d0["file_name"].endswith("a.jpg")
    assert (d0["height"], d0["width"]) == (40, 50)
    anns = _by_id(dicts)
    # sorted dataset ids 5, 9 -> contiguous 0, 1
    assert anns[11]["category_id"] == 0 and anns[12]["category_id"] == 1
    assert anns[11]["bbox_mode"] == BoxMode.XYWH_ABS
    # a missing bbox is computed from the mask
    assert anns[12]["bbox"] == [25.0, 5.0, 20.0, 15.0]
    assert anns[22]["iscrowd"] == 1
    m_poly = segmentation_to_bitmask(anns[11]["segmentation"], 40, 50)
    assert m_poly.sum() == 400 and m_poly[10:30, 10:30].all()
    m_unc = segmentation_to_bitmask(anns[21]["segmentation"], 40, 50)
    assert m_unc.sum() == 15 * 18 and m_unc[20:35, 30:48].all()
    meta = MetadataCatalog.get("test_coco_formats")
    assert meta.thing_classes == ["a", "b"]
    assert meta.thing_dataset_id_to_contiguous_id == {5: 0, 9: 1}


def test_register_coco_instances_is_lazy(coco_factory):
    json_file, root = coco_factory()
    os.rename(json_file, json_file + ".later")
    register_coco_instances("test_coco_lazy", {"extra": 1}, json_file, root)
    meta = MetadataCatalog.get("test_coco_lazy")
    assert meta.evaluator_type == "coco" and meta.json_file == json_file and meta.extra == 1
    os.rename(json_file + ".later", json_file)
    assert len(DatasetCatalog.get("test_coco_lazy")) == 2
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_instances("test_coco_lazy", {}, json_file, root)


def test_missing_and_malformed_json(tmp_path):
    with pytest.raises(DatasetError, match="not found") as e:
        load_coco_json(str(tmp_path / "nope.json"), str(tmp_path))
    assert "nope.json" in str(e.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,, }\n]}')
    with pytest.raises(DatasetError) as e:
        load_coco_json(str(bad), str(tmp_path))
    msg = str(e.value)
    assert "bad.json" in msg and "line 2 column" in msg and "\n" not in msg


def _set(path, value):
    """An edit that sets data[path[0]][path[1]]... = value (or deletes when value is _DEL)."""

    def edit(data):
        node = data
        for p in path[:-1]:
            node = node[p]
        if value is _DEL:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return edit


_DEL = object()

_BAD_ANNOTATIONS = [
    # (description, edit, annotation id that must be named, words in the message)
    ("unknown category", _set(["annotations", 0, "category_id"], 77), 11, ["category_id 77", "valid: 5, 9"]),
    ("missing key", _set(["annotations", 1, "segmentation"], _DEL), 12, ["segmentation"]),
    ("2-point polygon", _set(["annotations", 0, "segmentation"], [[1, 1, 5, 5]]), 11, ["at least 3"]),
    ("NaN coordinate", _set(["annotations", 0, "segmentation"], [[1, 1, 5, float("nan"), 9, 9]]), 11, ["NaN"]),
    ("RLE size", _set(["annotations", 1, "segmentation", "size"], [41, 50]), 12, ["[41, 50]", "[40, 50]"]),
    ("unknown image", _set(["annotations", 2, "image_id"], 99), 21, ["image_id 99"]),
]


@pytest.mark.parametrize("desc,edit,ann_id,words", _BAD_ANNOTATIONS, ids=[b[0] for b in _BAD_ANNOTATIONS])
def test_bad_annotation_errors_name_file_and_id(coco_factory, desc, edit, ann_id, words):
    json_file, root = coco_factory(edit=edit)
    with pytest.raises(DatasetError) as e:
        load_coco_json(json_file, root)
    msg = str(e.value)
    assert json_file in msg and f"annotation id {ann_id}" in msg and "\n" not in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("desc,edit,ann_id,words", _BAD_ANNOTATIONS, ids=[b[0] for b in _BAD_ANNOTATIONS])
def test_skip_policy_drops_only_the_bad_annotation(coco_factory, caplog, desc, edit, ann_id, words):
    json_file, root = coco_factory(edit=edit)
    with caplog.at_level(logging.WARNING, logger="segtrain.data.datasets.coco"):
        with bad_annotation_policy("skip"):
            dicts = load_coco_json(json_file, root)
    anns = _by_id(dicts)
    assert ann_id not in anns and len(anns) == 3
    assert "Skipped 1 bad annotation(s) and 0 bad image(s)" in caplog.text


def test_missing_image_file(coco_factory, caplog):
    json_file, root = coco_factory()
    os.remove(os.path.join(root, "b.png"))
    with pytest.raises(DatasetError) as e:
        load_coco_json(json_file, root)
    assert "b.png" in str(e.value) and "image id 2" in str(e.value)
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_json(json_file, root, on_bad_annotation="skip")
    assert [d["image_id"] for d in dicts] == [1]
    assert "0 bad annotation(s) and 1 bad image(s)" in caplog.text


def test_missing_top_level_and_image_keys(coco_factory):
    json_file, root = coco_factory(edit=_set(["categories"], _DEL))
    with pytest.raises(DatasetError, match="missing required key 'categories'"):
        load_coco_json(json_file, root)
    json_file, root = coco_factory(edit=_set(["images", 0, "height"], _DEL))
    with pytest.raises(DatasetError, match=r"image id 1: missing required key\(s\) height"):
        load_coco_json(json_file, root)


def test_policy_is_validated(coco_factory):
    json_file, root = coco_factory()
    with pytest.raises(Exception, match="ON_BAD_ANNOTATION"):
        load_coco_json(json_file, root, on_bad_annotation="ignore")
