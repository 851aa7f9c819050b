"""MaskFormer meta-arch: padding, targets, train / eval outputs, inference formulas."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.modeling.mask2former.mask_former_head import MaskFormerHead
from segtrain.modeling.mask2former.maskformer_model import MaskFormer, sem_seg_postprocess
from segtrain.modeling.mask2former.transformer_decoder.mask2former_transformer_decoder import (
    MultiScaleMaskedTransformerDecoder,
)
from segtrain.structures.image_list import ImageList
from segtrain.structures.instances import Instances
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError, DatasetError

K, Q, C = 3, 6, 16


class _TinyBackbone(nn.Module):
    """Stand-in backbone: strided convs giving res2..res5 (strides 4..32)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.res3 = nn.Conv2d(8, 8, 2, stride=2)
        self.res4 = nn.Conv2d(8, 8, 2, stride=2)
        self.res5 = nn.Conv2d(8, 8, 2, stride=2)

    def output_shape(self):
        return {f"res{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 6)}

    def forward(self, x):
        r2 = self.stem(x)
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        return {"res2": r2, "res3": r3, "res4": r4, "res5": self.res5(r4)}


class _TinyPixelDecoder(nn.Module):
    """Stand-in pixel decoder: 1x1 convs; multi-scale maps at strides 32, 16, 8."""

    def __init__(self):
        super().__init__()
        self.mask_features = nn.Conv2d(8, C, 1)
        self.lat = nn.ModuleList(nn.Conv2d(8, C, 1) for _ in range(3))

    def forward_features(self, f):
        ms = [self.lat[0](f["res5"]), self.lat[1](f["res4"]), self.lat[2](f["res3"])]
        return self.mask_features(f["res2"]), None, ms


class _Meta:
    thing_dataset_id_to_contiguous_id = {1: 0, 2: 1}  # class 2 is stuff


def _model(criterion=None, **kw):
    torch.manual_seed(0)
    predictor = MultiScaleMaskedTransformerDecoder(
        C,
        num_classes=K,
        hidden_dim=C,
        num_queries=Q,
        nheads=2,
        dim_feedforward=32,
        dec_layers=3,
        pre_norm=False,
        mask_dim=C,
        enforce_input_project=False,
    )
    backbone = _TinyBackbone()
    head = MaskFormerHead(
        backbone.output_shape(),
        num_classes=K,
        pixel_decoder=_TinyPixelDecoder(),
        transformer_predictor=predictor,
        transformer_in_feature="multi_scale_pixel_decoder",
    )
    args = dict(
        backbone=backbone,
        sem_seg_head=head,
        criterion=criterion,
        num_queries=Q,
        object_mask_threshold=0.0,
        overlap_threshold=0.0,
        metadata=None,
        size_divisibility=32,
        sem_seg_postprocess_before_inference=True,
        pixel_mean=[100.0, 110.0, 120.0],
        pixel_std=[50.0, 50.0, 50.0],
        semantic_on=True,
        panoptic_on=False,
        instance_on=True,
        test_topk_per_image=5,
    )
    args.update(kw)
    return MaskFormer(**args)


def _inputs(sizes=((40, 50), (64, 30)), seed=0, original=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        img = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        inst = Instances((h, w))
        masks = torch.zeros(2, h, w, dtype=torch.bool)
        masks[0, : h // 2, : w // 2] = True
        masks[1, h // 3 :, w // 3 :] = True
        inst.gt_classes = torch.tensor([0, 2])
        inst.gt_masks = masks
        inst.gt_boxes = torch.tensor([[0, 0, w // 2, h // 2], [w // 3, h // 3, w, h]], dtype=torch.float32)
        hh, ww = original[i] if original else (h, w)
        out.append({"image": img, "instances": inst, "height": hh, "width": ww, "image_id": i})
    return out


class _RecordingCriterion(nn.Module):
    required_output_keys = ("pred_logits", "pred_masks")
    target_format = "instances"

    def forward(self, outputs, targets):
        self.outputs, self.targets = outputs, targets
        loss = outputs["pred_masks"].mean() + outputs["pred_logits"].mean()
        return {"loss_x": loss.detach(), CORE_LOSS_KEY: loss}


# ----------------------------------------------------------------------- ImageList
def test_image_list_pads_to_divisible_size_and_crops_back():
    a, b = torch.ones(3, 5, 7), torch.full((3, 9, 4), 2.0)
    il = ImageList.from_tensors([a, b], size_divisibility=8)
    assert il.tensor.shape == (2, 3, 16, 8) and il.image_sizes == [(5, 7), (9, 4)]
    assert torch.equal(il[0], a) and torch.equal(il[1], b)
    assert il.tensor[0, :, 5:].abs().sum() == 0 and il.tensor[1, :, :, 4:].abs().sum() == 0
    assert ImageList.from_tensors([a], 0).tensor.shape == (1, 3, 5, 7)
    with pytest.raises(Exception, match="empty"):
        ImageList.from_tensors([])


# ----------------------------------------------------------------------- training
def test_training_pads_images_and_targets_to_the_batch():
    crit = _RecordingCriterion()
    model = _model(criterion=crit).train()
    losses = model(_inputs())
    assert set(losses) == {"loss_x", CORE_LOSS_KEY}
    out, tgt = crit.outputs, crit.targets
    assert out["pred_logits"].shape == (2, Q, K + 1)
    assert out["pred_masks"].shape == (2, Q, 64 // 4, 64 // 4)  # batch padded to 64x64
    assert len(out["aux_outputs"]) == 3
    assert [t["masks"].shape for t in tgt] == [(2, 64, 64)] * 2
    assert torch.equal(tgt[0]["labels"], torch.tensor([0, 2]))
    assert tgt[0]["masks"][:, 40:].sum() == 0 and tgt[0]["masks"][:, :, 50:].sum() == 0
    losses[CORE_LOSS_KEY].backward()
    assert model.sem_seg_head.predictor.query_feat.weight.grad is not None


def test_targets_and_logits_follow_the_criterion_target_format():
    crit = _RecordingCriterion()
    crit.target_format = "find_packed"  # class-agnostic: one objectness logit per query
    model = _model(criterion=crit).train()
    model(_inputs())
    out, tgt = crit.outputs, crit.targets
    assert out["pred_logits"].shape == (2, Q, 1)
    assert all(a["pred_logits"].shape == (2, Q, 1) for a in out["aux_outputs"])
    assert isinstance(tgt, dict) and tgt["num_boxes"].tolist() == [2, 2] and tgt["masks"].shape == (4, 64, 64)
    crit.target_format = "video"
    with pytest.raises(ConfigError, match="target_format 'video'.*valid: instances, find_packed"):
        model(_inputs())


def test_normalization_and_zero_padding():
    model = _model()
    inp = _inputs()
    images = model.preprocess_image(inp)
    x = inp[0]["image"].float()
    expected = (x - torch.tensor([100.0, 110.0, 120.0]).view(3, 1, 1)) / 50.0
    torch.testing.assert_close(images.tensor[0, :, :40, :50], expected)
    assert images.tensor[0, :, 40:].abs().sum() == 0


def test_deep_supervision_off_drops_aux_outputs():
    crit = _RecordingCriterion()
    model = _model(criterion=crit, deep_supervision=False).train()
    model(_inputs())
    assert "aux_outputs" not in crit.outputs


def test_training_without_instances_fails_clearly():
    model = _model(criterion=_RecordingCriterion()).train()
    inp = _inputs()
    del inp[1]["instances"]
    with pytest.raises(DatasetError, match="input 1"):
        model(inp)


def test_real_set_criterion_loss_keys():
    from segtrain.modeling.criterion import SetCriterion
    from segtrain.modeling.matcher import HungarianMatcher

    torch.manual_seed(0)
    crit = SetCriterion(
        K,
        HungarianMatcher(2.0, 5.0, 5.0, num_points=64),
        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        0.1,
        ["labels", "masks"],
        64,
        3.0,
        0.75,
    )
    model = _model(criterion=crit).train()
    losses = model(_inputs())
    for k in ("loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_2", CORE_LOSS_KEY):
        assert k in losses and torch.isfinite(losses[k])
    assert "loss_ce_3" not in losses  # 3 layers -> aux 0..2


# ----------------------------------------------------------------------- eval
def test_eval_outputs_follow_the_contract():
    model = _model().eval()
    with torch.no_grad():
        res = model(_inputs(original=[(80, 100), (32, 15)]))
    assert len(res) == 2
    inst = res[0]["instances"]
    assert inst.image_size == (80, 100)
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape == (5, 80, 100)
    assert inst.pred_boxes.shape == (5, 4) and inst.scores.shape == (5,)
    assert inst.pred_classes.dtype == torch.int64
    assert res[0]["sem_seg"].shape == (K, 80, 100)
    assert res[1]["instances"].pred_masks.shape == (5, 32, 15)
    assert res[1]["sem_seg"].shape == (K, 32, 15)


def test_semantic_only_postprocesses_after_inference():
    model = _model(instance_on=False, sem_seg_postprocess_before_inference=False).eval()
    with torch.no_grad():
        res = model(_inputs(original=[(20, 25), (64, 30)]))
    assert set(res[0]) == {"sem_seg"} and res[0]["sem_seg"].shape == (K, 20, 25)
    with pytest.raises(ConfigError):
        _model(semantic_on=False, sem_seg_postprocess_before_inference=False)


def test_sem_seg_postprocess_crops_then_resizes():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 8, 8)
    out = sem_seg_postprocess(x, (4, 6), 4, 6)
    assert torch.equal(out, x[:, :4, :6])
    assert sem_seg_postprocess(x, (4, 6), 8, 12).shape == (2, 8, 12)


def test_instance_inference_topk_and_score_formula():
    model = _model(test_topk_per_image=3)
    # Q = 2 queries written by hand (the model has 6; inference only looks at its inputs)
    mask_cls = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 1.0]])
    mask_pred = torch.full((2, 4, 5), -4.0)
    mask_pred[0, :2, :3] = 2.0  # query 0: 2x3 block at the top-left
    mask_pred[0, 0, 0] = 4.0
    mask_pred[1, 1:4, 2:5] = 1.0  # query 1: 3x3 block
    res = model.instance_inference(mask_cls, mask_pred)
    probs = F.softmax(mask_cls, -1)[:, :-1]
    order = probs.flatten().topk(3).indices
    got = sorted(zip(res.scores.tolist(), res.pred_classes.tolist()), reverse=True)
    m0 = (5 * torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(4.0))) / 6
    m1 = torch.sigmoid(torch.tensor(1.0))
    mask_score = {0: m0, 1: m1}
    expected = sorted(((float(probs.flatten()[i] * mask_score[int(i) // K]), int(i) % K) for i in order), reverse=True)
    for (s, c), (es, ec) in zip(got, expected):
        assert c == ec and s == pytest.approx(es, rel=1e-4)
    # masks and boxes follow their query: query 0 is the only class-0 pair, query 1 the class-2 one
    i0 = res.pred_classes.tolist().index(0)
    i2 = res.pred_classes.tolist().index(2)
    assert res.pred_masks[i0].sum() == 6 and res.pred_boxes[i0].tolist() == [0.0, 0.0, 3.0, 2.0]
    assert res.pred_masks[i2].sum() == 9 and res.pred_boxes[i2].tolist() == [2.0, 1.0, 5.0, 4.0]


def test_instance_inference_k_larger_than_q_times_k():
    model = _model(test_topk_per_image=100)
    res = model.instance_inference(torch.randn(2, K + 1), torch.randn(2, 4, 4))
    assert len(res.scores) == 2 * K


def test_panoptic_inference_merges_stuff_and_respects_thresholds():
    model = _model(panoptic_on=True, metadata=_Meta(), object_mask_threshold=0.5, overlap_threshold=0.5)
    big = 10.0
    mask_cls = torch.tensor(
        [
            [big, 0, 0, 0],  # thing class 0
            [0, 0, big, 0],  # stuff class 2, left part
            [0, 0, big, 0],  # stuff class 2, right part -> merged into one segment
            [0, 0, 0, big],  # no-object -> dropped
            [0, 0.1, 0, 0],  # low score -> dropped
        ]
    )
    mask_pred = torch.full((5, 4, 6), -big)
    mask_pred[0, :2, :2] = big
    mask_pred[1, 2:, :3] = big
    mask_pred[2, 2:, 3:] = big
    mask_pred[3] = big
    mask_pred[4] = big
    seg, info = model.panoptic_inference(mask_cls, mask_pred)
    assert [(s["category_id"], s["isthing"]) for s in info] == [(0, True), (2, False)]
    assert (seg[:2, :2] == 1).all() and (seg[2:] == 2).all() and (seg[:2, 2:] == 0).all()
    # instances of a panoptic model keep only thing classes
    inst = model.instance_inference(mask_cls, mask_pred)
    assert set(inst.pred_classes.tolist()) <= {0, 1}
