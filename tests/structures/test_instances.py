"""Instances: fields, indexing, device moves and concatenation."""

import pickle

import pytest
import torch

from segtrain.structures import Instances


def _make(n=4, offset=0):
    inst = Instances((8, 10))
    inst.gt_classes = torch.arange(n) + offset
    inst.gt_boxes = torch.rand(n, 4, generator=torch.Generator().manual_seed(n + offset))
    inst.gt_masks = torch.zeros(n, 8, 10, dtype=torch.bool)
    inst.names = [f"o{i + offset}" for i in range(n)]
    return inst


def test_fields():
    inst = _make()
    assert inst.image_size == (8, 10) and len(inst) == 4
    assert inst.has("gt_classes") and not inst.has("scores")
    assert inst.get("gt_classes") is inst.gt_classes
    assert set(inst.get_fields()) == {"gt_classes", "gt_boxes", "gt_masks", "names"}
    with pytest.raises(ValueError, match="length 3"):
        inst.scores = torch.zeros(3)
    with pytest.raises(AttributeError, match="scores.*gt_classes"):
        inst.scores
    inst.remove("names")
    assert not inst.has("names")
    assert len(Instances((2, 2))) == 0
    kw = Instances((2, 2), a=torch.zeros(3))
    assert len(kw) == 3


def test_indexing():
    inst = _make()
    one = inst[1]
    assert len(one) == 1 and one.gt_classes.tolist() == [1] and one.names == ["o1"]
    assert inst[-1].gt_classes.tolist() == [3]
    with pytest.raises(IndexError):
        inst[4]
    assert inst[1:3].gt_classes.tolist() == [1, 2] and inst[1:3].names == ["o1", "o2"]
    keep = torch.tensor([True, False, True, False])
    sel = inst[keep]
    assert sel.gt_classes.tolist() == [0, 2] and sel.names == ["o0", "o2"]
    idx = inst[torch.tensor([3, 0])]
    assert idx.gt_classes.tolist() == [3, 0] and idx.names == ["o3", "o0"]
    assert torch.equal(idx.gt_boxes, inst.gt_boxes[[3, 0]])
    assert inst[torch.zeros(4, dtype=torch.bool)].gt_masks.shape == (0, 8, 10)
    with pytest.raises(NotImplementedError):
        iter(inst)


def test_to_and_pickle():
    inst = _make()
    moved = inst.to(torch.device("cpu"))
    assert moved is not inst and torch.equal(moved.gt_boxes, inst.gt_boxes) and moved.names == inst.names
    cast = inst.to(dtype=torch.float64)
    assert cast.gt_boxes.dtype == torch.float64
    back = pickle.loads(pickle.dumps(inst))
    assert back.image_size == (8, 10) and back.gt_classes.tolist() == [0, 1, 2, 3]


def test_cat():
    a, b = _make(2), _make(3, offset=10)
    c = Instances.cat([a, b])
    assert len(c) == 5 and c.gt_classes.tolist() == [0, 1, 10, 11, 12]
    assert c.names == ["o0", "o1", "o10", "o11", "o12"] and c.gt_masks.shape == (5, 8, 10)
    with pytest.raises(ValueError, match="image sizes"):
        Instances.cat([a, Instances((1, 1), gt_classes=torch.zeros(1))])
    with pytest.raises(ValueError, match="fields differ"):
        Instances.cat([a, Instances((8, 10), gt_classes=torch.zeros(1))])
