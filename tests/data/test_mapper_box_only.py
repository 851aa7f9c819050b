"""InstanceDatasetMapper (Mask2Former) on box-only data: a one-line ConfigError that says masks
are required and names the dataset, under either bad-annotation policy (not a KeyError)."""

import pytest

from segtrain.config import get_cfg
from segtrain.data import InstanceDatasetMapper, build_mapper, load_coco_json
from segtrain.utils.errors import ConfigError


def _no_masks(data):
    for a in data["annotations"]:
        a["bbox"] = [5, 5, 10, 10]
        a["segmentation"] = []


def test_box_only_data_is_refused_naming_the_dataset(coco_factory):
    json_file, root = coco_factory(edit=_no_masks)
    dicts = load_coco_json(json_file, root)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("my_boxes_train",)
    cfg.DATASETS.TEST = ("my_boxes_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (40,)
    cfg.INPUT.MIN_SIZE_TEST = 40
    for is_train, name in ((True, "my_boxes_train"), (False, "my_boxes_val")):
        for policy in ("error", "skip"):
            cfg.DATASETS.ON_BAD_ANNOTATION = policy
            mapper = build_mapper(cfg, is_train=is_train)
            assert isinstance(mapper, InstanceDatasetMapper)
            with pytest.raises(ConfigError) as e:
                mapper(dicts[0])
            msg = str(e.value)
            assert "\n" not in msg and "needs instance masks" in msg and f"'{name}'" in msg
            assert "annotation id 11" in msg and "a.jpg" in msg and "FindDatasetMapper" in msg


def test_crowd_box_only_annotations_are_dropped_not_refused(coco_factory):
    def edit(data):
        data["annotations"][3]["bbox"] = [0, 0, 10, 5]
        del data["annotations"][3]["segmentation"]  # the crowd region of image 2

    json_file, root = coco_factory(edit=edit)
    dicts = load_coco_json(json_file, root)
    mapper = InstanceDatasetMapper(augmentations=[])
    assert len(mapper(dicts[1])["instances"]) == 1
    # a mixed image: refused (Mask2Former's mask losses need every instance's mask)
    mixed = dict(dicts[0], annotations=[dicts[0]["annotations"][0], dict(dicts[1]["annotations"][1], iscrowd=0)])
    with pytest.raises(
        ConfigError,
        match=r"^InstanceDatasetMapper \(Mask2Former\) needs instance masks, but the "
        r"dataset has box-only annotations \(annotation id 22",
    ):
        mapper(mixed)
