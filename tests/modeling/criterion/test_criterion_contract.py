"""Output contract (required_output_keys / target_format / build-time check) and target converters."""

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.criterion import TARGET_FORMATS, SetCriterion, check_criterion_outputs
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY, build_model
from segtrain.structures import Instances
from segtrain.structures.targets import find_packed_to_targets, instances_to_targets, targets_to_find_packed
from segtrain.utils.errors import ConfigError


def test_set_criterion_declares_contract():
    assert SetCriterion.required_output_keys == ("pred_logits", "pred_masks")
    assert SetCriterion.target_format == "instances" and "instances" in TARGET_FORMATS


def test_check_criterion_outputs_message():
    check_criterion_outputs("MaskFormer", {"pred_logits", "pred_masks", "aux_outputs"}, SetCriterion)
    with pytest.raises(ConfigError) as e:
        check_criterion_outputs("BoxOnlyArch", {"pred_logits", "pred_boxes"}, SetCriterion)
    msg = str(e.value)
    assert "BoxOnlyArch" in msg and "SetCriterion" in msg and "pred_masks" in msg and "\n" not in msg


def test_build_model_checks_pairing():
    name = "_ContractTestArch"
    if name not in META_ARCH_REGISTRY.names():

        class _ContractTestArch(torch.nn.Module):
            output_keys = ("pred_logits", "pred_boxes")

            def __init__(self, cfg):
                super().__init__()
                self.criterion = SetCriterion(3, torch.nn.Identity(), {}, 0.1, ["labels"], 10, 3.0, 0.75)

        META_ARCH_REGISTRY.register(_ContractTestArch)
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = name
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(ConfigError, match=r"_ContractTestArch.*\['pred_masks'\].*SetCriterion"):
        build_model(cfg)


def _instances(h, w, n, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    boxes = []
    for i in range(n):
        y0, x0 = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
        masks[i, y0 : y0 + 3, x0 : x0 + 4] = True
        boxes.append([x0, y0, x0 + 4, y0 + 3])
    inst = Instances((h, w))
    inst.gt_classes = torch.randint(0, 5, (n,), generator=g)
    inst.gt_masks = masks
    inst.gt_boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return inst


def test_instances_to_targets_pads_masks():
    insts = [_instances(10, 12, 2, 0), _instances(8, 16, 0, 1)]
    t = instances_to_targets(insts, image_size=(12, 16))
    assert t[0]["masks"].shape == (2, 12, 16) and t[1]["masks"].shape == (0, 12, 16)
    assert t[0]["masks"].dtype == torch.bool and t[0]["masks"][:, 10:].sum() == 0
    torch.testing.assert_close(t[0]["boxes"], insts[0].gt_boxes)
    assert t[0]["labels"].dtype == torch.int64
    t2 = instances_to_targets([{"labels": torch.tensor([1]), "masks": insts[0].gt_masks[:1]}])
    torch.testing.assert_close(t2[0]["boxes"], insts[0].gt_boxes[:1])  # tight box from the mask


def test_find_packed_roundtrip():
    insts = [_instances(10, 12, 2, 0), _instances(10, 12, 0, 1), _instances(10, 12, 3, 2)]
    per_image = instances_to_targets(insts)
    sizes = [(10, 12)] * 3
    packed = targets_to_find_packed(per_image, sizes)
    assert packed["num_boxes"].tolist() == [2, 0, 3]
    assert packed["boxes"].shape == (5, 4) and packed["boxes_padded"].shape == (3, 3, 4)
    assert packed["object_ids_padded"].tolist() == [[0, 1, -1], [-1, -1, -1], [0, 1, 2]]
    assert packed["masks"].shape == (5, 10, 12) and packed["is_valid_mask"].all()
    assert packed["is_exhaustive"].tolist() == [True] * 3
    assert (packed["boxes"] >= 0).all() and (packed["boxes"] <= 1).all()
    torch.testing.assert_close(packed["boxes_padded"][2, :3], packed["boxes"][2:])
    back = find_packed_to_targets(packed, sizes)
    for a, b in zip(per_image, back):
        torch.testing.assert_close(b["boxes"], a["boxes"])
        assert torch.equal(b["labels"], a["labels"]) and torch.equal(b["masks"], a["masks"])
