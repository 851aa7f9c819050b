"""Box conversions, IoU / GIoU (pairwise and paired), degenerate boxes."""

import pytest
import torch

from segtrain.structures.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_iou_paired,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    generalized_box_iou_paired,
)


def test_conversions_roundtrip():
    b = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    xyxy = box_cxcywh_to_xyxy(b)
    torch.testing.assert_close(xyxy, torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), b)


def test_iou_giou_hand():
    """[0,0,2,2] vs [1,1,3,3]: inter 1, union 4+4-1=7 -> iou 1/7; enclosing 3x3=9 ->
    giou = 1/7 - (9-7)/9. Disjoint [0,0,1,1] vs [2,0,3,1]: iou 0, C=3, union 2 -> -1/3."""
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    iou, union = box_iou(a, b)
    assert iou[0, 0].item() == pytest.approx(1 / 7)
    assert union[0, 0].item() == pytest.approx(7.0)
    g = generalized_box_iou(a, b)
    assert g[0, 0].item() == pytest.approx(1 / 7 - 2 / 9)
    assert g[1, 1].item() == pytest.approx(-1 / 3)
    torch.testing.assert_close(box_iou_paired(a, b)[0], iou.diagonal())
    torch.testing.assert_close(generalized_box_iou_paired(a, b), g.diagonal())
    assert box_area(a).tolist() == [4.0, 1.0]


def test_degenerate_boxes_no_nan():
    pts = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 1.0]], requires_grad=True)
    same = pts.detach().clone()
    g = generalized_box_iou(pts, same)
    assert torch.isfinite(g).all()
    gp = generalized_box_iou_paired(pts, same)
    assert torch.isfinite(gp).all()
    (g.sum() + gp.sum() + box_iou(pts, same)[0].sum()).backward()
    assert torch.isfinite(pts.grad).all()


def test_giou_gradcheck():
    a = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.1, 0.9, 0.8]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.2, 0.25, 0.7, 0.65], [0.0, 0.5, 0.4, 0.9]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: generalized_box_iou(x, b), (a,))
    assert torch.autograd.gradcheck(lambda x: generalized_box_iou_paired(x, b), (a,))
