"""The target-format entry point: ``convert_targets`` by format name, its one-line error, the
class-agnostic formats, and ``TARGET_FORMATS`` as the one list the criteria check against."""

import pytest
import torch

from segtrain.modeling.criterion import TARGET_FORMATS as CRITERION_TARGET_FORMATS
from segtrain.structures import Instances
from segtrain.structures.targets import (
    DEFAULT_TARGET_FORMAT,
    TARGET_FORMATS,
    convert_targets,
    instances_to_targets,
    is_class_agnostic,
    targets_to_find_packed,
)
from segtrain.utils.errors import ConfigError


def _targets():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 1:4, 2:6] = True
    masks[1, 5:9, 7:11] = True
    insts = [
        Instances((10, 12), gt_classes=torch.tensor([3, 1]), gt_masks=masks),
        Instances((8, 12), gt_classes=torch.tensor([2]), gt_masks=masks[:1, :8]),
    ]
    return instances_to_targets(insts, image_size=(10, 12)), [(10, 12), (8, 12)]


def test_convert_targets_dispatches_on_the_format_name():
    targets, sizes = _targets()
    assert convert_targets("instances", targets, sizes) is targets
    packed = convert_targets("find_packed", targets, sizes)
    expected = targets_to_find_packed(targets, sizes)
    assert list(packed) == list(expected)
    for k, v in expected.items():
        assert torch.equal(packed[k], v), k


def test_convert_targets_names_the_valid_formats():
    targets, sizes = _targets()
    with pytest.raises(ConfigError, match=r"^target_format 'video' .*; valid: instances, find_packed$"):
        convert_targets("video", targets, sizes)


def test_one_list_of_target_formats():
    assert CRITERION_TARGET_FORMATS is TARGET_FORMATS
    assert DEFAULT_TARGET_FORMAT in TARGET_FORMATS
    assert [f for f in TARGET_FORMATS if is_class_agnostic(f)] == ["find_packed"]
