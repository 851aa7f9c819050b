"""The steps that ``benchmark.py criterion`` times: seeded inputs at official settings and one
forward+backward (or matching) call per case. Baselines: the per-prediction, per-image loop
:class:`tests.reference.set_criterion.ReferenceSetCriterion` and the per-image matching loop
:func:`tests.reference.hungarian.hungarian_match_per_image`.

Cases: ``m2f`` / ``m2f_loop`` (``SetCriterion`` vs the loop, fwd+bwd), ``matcher`` /
``matcher_loop`` (``HungarianMatcher.match_many`` over every output vs the per-image loop
per output), ``sam3`` (``Sam3LossWrapper``), ``sam2`` (``MultiStepMultiMasksAndIous``).
"""

from typing import Callable, Dict, List, Tuple

__all__ = ["CRITERION_CASES", "DESCRIPTIONS", "build_case", "m2f_criterion", "m2f_inputs"]

CRITERION_CASES = ("m2f", "m2f_loop", "matcher", "matcher_loop", "sam3", "sam2")

DESCRIPTIONS = {
    "m2f": "SetCriterion batched (fwd+bwd)",
    "m2f_loop": "SetCriterion per-image/per-layer loop (fwd+bwd)",
    "matcher": "HungarianMatcher.match_many, all outputs",
    "matcher_loop": "per-image matching loop per output",
    "sam3": "Sam3LossWrapper (fwd+bwd)",
    "sam2": "MultiStepMultiMasksAndIous (fwd+bwd)",
}


def m2f_inputs(args, device, requires_grad: bool = True) -> Tuple[Dict, List[Dict]]:
    """Random Mask2Former predictions and COCO-like targets, seeded by ``args.seed``.

    outputs: ``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, S/4, S/4] and ``args.layers - 1``
    ``aux_outputs``; targets: B dicts of ``args.gt_per_image`` random rectangles ``masks``
    [n, S, S] bool and ``labels`` [n] in [0, K) (B = args.batch, Q = args.queries,
    K = args.classes, S = args.image_size).
    """
    import torch

    g = torch.Generator().manual_seed(args.seed)
    B, Q, K, L = args.batch, args.queries, args.classes, args.layers
    h = w = args.image_size // 4
    H = W = args.image_size

    def layer():
        return {
            "pred_logits": torch.randn(B, Q, K + 1, generator=g).to(device).requires_grad_(requires_grad),
            "pred_masks": (2 * torch.randn(B, Q, h, w, generator=g)).to(device).requires_grad_(requires_grad),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(L - 1)]
    targets = []
    for _ in range(B):
        n = args.gt_per_image
        masks = torch.zeros(n, H, W, dtype=torch.bool)
        for i in range(n):  # random rectangles, like instance masks
            y0, x0 = (int(v) for v in torch.randint(0, H // 2, (2,), generator=g))
            hh, ww = (int(v) for v in torch.randint(8, H // 2, (2,), generator=g))
            masks[i, y0 : y0 + hh, x0 : x0 + ww] = True
        targets.append({"labels": torch.randint(0, K, (n,), generator=g).to(device), "masks": masks.to(device)})
    return out, targets


def m2f_criterion(args, device):
    """``SetCriterion`` at Mask2Former's official settings (class 2, mask 5, dice 5, eos 0.1,
    ``args.num_points`` points, oversample 3, importance 0.75)."""
    from segtrain.modeling.criterion import SetCriterion
    from segtrain.modeling.matcher import HungarianMatcher

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    return SetCriterion(
        args.classes,
        matcher,
        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        0.1,
        ["labels", "masks"],
        args.num_points,
        3.0,
        0.75,
    ).to(device)


def _case_m2f(args, device, reference: bool) -> Callable[[], None]:
    import torch

    from segtrain.modeling.criterion import CORE_LOSS_KEY
    from tests.reference.set_criterion import ReferenceSetCriterion

    crit = m2f_criterion(args, device)
    if reference:
        crit = ReferenceSetCriterion.of(crit)
    out, targets = m2f_inputs(args, device)
    leaves = [out["pred_logits"], out["pred_masks"]] + [t for a in out["aux_outputs"] for t in a.values()]

    def step():
        torch.manual_seed(args.seed)
        losses = crit(out, targets)
        losses[CORE_LOSS_KEY].backward()
        for t in leaves:
            t.grad = None

    return step


def _case_matcher(args, device, reference: bool) -> Callable[[], None]:
    import torch

    from segtrain.modeling.matcher import HungarianMatcher
    from tests.reference.hungarian import hungarian_match_per_image

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    out, targets = m2f_inputs(args, device, requires_grad=False)
    layers = [{k: v for k, v in out.items() if k != "aux_outputs"}] + out["aux_outputs"]

    def step():
        torch.manual_seed(args.seed)
        if reference:
            for layer in layers:
                hungarian_match_per_image(matcher, layer, targets)
        else:
            matcher.match_many(layers, targets)

    return step


def _case_sam3(args, device) -> Callable[[], None]:
    """Sam3LossWrapper at its official fine-tuning settings (config defaults), 200 queries,
    6 decoder outputs (5 aux), one-to-many copies, masks at 1/4 of ``args.sam3_image_size``."""
    import torch

    from segtrain.config import get_cfg
    from segtrain.modeling.criterion import build_criterion
    from segtrain.structures.boxes import box_cxcywh_to_xyxy
    from segtrain.structures.targets import targets_to_find_packed

    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "Sam3LossWrapper"
    cfg.MODEL.MATCHER.NAME = "BinaryHungarianMatcherV2"
    crit = build_criterion(cfg).to(device)
    g = torch.Generator().manual_seed(args.seed)
    B, Q, S = args.batch, 200, args.sam3_image_size
    h = S // 4

    def out(masks: bool, suffix: str = ""):
        boxes = torch.rand(B, Q, 4, generator=g) * 0.5 + 0.25
        d = {
            "pred_logits": torch.randn(B, Q, 1, generator=g),
            "pred_boxes": boxes,
            "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes),
        }
        if masks:
            d["pred_masks"] = torch.randn(B, Q, h, h, generator=g)
        return {k + suffix: v.to(device).requires_grad_() for k, v in d.items()}

    outputs = out(True)
    outputs.update(out(True, "_o2m"))
    outputs["presence_logit_dec"] = torch.randn(B, 1, generator=g).to(device).requires_grad_()
    outputs["aux_outputs"] = []
    for _ in range(5):
        a = out(False)
        a.update(out(False, "_o2m"))
        outputs["aux_outputs"].append(a)
    per_image = []
    for b in range(B):
        n = args.gt_per_image if b % 2 == 0 else 0  # one find without its concept (presence negative)
        masks = torch.zeros(n, S, S, dtype=torch.bool)
        boxes = torch.zeros(n, 4)
        for i in range(n):
            y0, x0 = (int(v) for v in torch.randint(0, S // 2, (2,), generator=g))
            hh, ww = (int(v) for v in torch.randint(16, S // 2, (2,), generator=g))
            masks[i, y0 : y0 + hh, x0 : x0 + ww] = True
            boxes[i] = torch.tensor([x0, y0, x0 + ww, y0 + hh], dtype=torch.float32)
        per_image.append({"labels": torch.zeros(n, dtype=torch.long), "masks": masks, "boxes": boxes})
    packed = targets_to_find_packed(per_image, [(S, S)] * B)
    packed = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in packed.items()}
    leaves = [v for v in outputs.values() if torch.is_tensor(v)] + [
        v for a in outputs["aux_outputs"] for v in a.values()
    ]

    def step():
        torch.manual_seed(args.seed)
        losses = crit([outputs], [packed])
        losses["core_loss"].backward()
        for t in leaves:
            t.grad = None

    return step


def _case_sam2(args, device) -> Callable[[], None]:
    """MultiStepMultiMasksAndIous at SAM 2.1 fine-tuning settings: 8 frames, 3 objects,
    3 masks per step, one step per frame (plus corrections on 2 frames), masks of
    ``args.sam2_image_size``."""
    import torch

    from segtrain.config import get_cfg
    from segtrain.modeling.criterion import build_criterion

    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "MultiStepMultiMasksAndIous"
    crit = build_criterion(cfg).to(device)
    g = torch.Generator().manual_seed(args.seed)
    T, N, M, S = 8, 3, 3, args.sam2_image_size
    outs, leaves = [], []
    for t in range(T):
        steps = 3 if t in (1, 4) else 1
        d = {
            "multistep_pred_multimasks_high_res": [
                torch.randn(N, M, S, S, generator=g).to(device).requires_grad_() for _ in range(steps)
            ],
            "multistep_pred_ious": [torch.rand(N, M, generator=g).to(device).requires_grad_() for _ in range(steps)],
            "multistep_object_score_logits": [
                torch.randn(N, 1, generator=g).to(device).requires_grad_() for _ in range(steps)
            ],
        }
        leaves += [x for v in d.values() for x in v]
        outs.append(d)
    targets = (torch.rand(T, N, S, S, generator=g) > 0.5).float().to(device)

    def step():
        losses = crit(outs, targets)
        losses["core_loss"].backward()
        for x in leaves:
            x.grad = None

    return step


def build_case(name: str, args, device) -> Callable[[], None]:
    """The step of case ``name`` (one of ``CRITERION_CASES``), inputs built once."""
    if name in ("m2f", "m2f_loop"):
        return _case_m2f(args, device, reference=(name == "m2f_loop"))
    if name in ("matcher", "matcher_loop"):
        return _case_matcher(args, device, reference=(name == "matcher_loop"))
    if name == "sam3":
        return _case_sam3(args, device)
    if name == "sam2":
        return _case_sam2(args, device)
    raise ValueError(f"unknown case {name!r}; valid: {', '.join(CRITERION_CASES)}")
