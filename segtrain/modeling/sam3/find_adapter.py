"""Between segtrain's find inputs (``FindDatasetMapper`` dicts) and ``Sam3Image``: the image
batch at the model's square input size, the text prompt of each find (its category name) and
the per-image detections of the finds."""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from segtrain.data.find.collate import FindBatch
from segtrain.modeling.postprocessing import sem_seg_postprocess
from segtrain.structures.instances import Instances
from segtrain.utils.errors import ConfigError

__all__ = ["batch_images", "find_captions", "detections_per_image"]


def batch_images(
    batched_inputs: Sequence[Mapping[str, Any]], image_size: int, pixel_mean: Tensor, pixel_std: Tensor, device
) -> Tuple[Tensor, Tuple[int, int], List[Tuple[int, int]]]:
    """Normalize each ``image`` [3, h, w] (0-255), pad them (bottom / right, with 0 after
    normalization) to the batch's largest (Hp, Wp) and resize that frame to the square input
    [N, 3, image_size, image_size] (bilinear, antialiased). Boxes normalized by (Wp, Hp) keep
    their values. Returns the batch, (Hp, Wp) and each image's (h, w)."""
    images = [x["image"].to(device=device, dtype=torch.float32) for x in batched_inputs]
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    Hp, Wp = max(h for h, _ in sizes), max(w for _, w in sizes)
    batch = torch.zeros((len(images), 3, Hp, Wp), device=device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = (im - pixel_mean.view(3, 1, 1)) / pixel_std.view(3, 1, 1)
    if (Hp, Wp) != (image_size, image_size):
        batch = F.interpolate(
            batch, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return batch, (Hp, Wp), sizes


def find_captions(
    finds: FindBatch, batched_inputs: Sequence[Mapping[str, Any]], class_names: Optional[Sequence[str]]
) -> Tuple[List[str], Tensor]:
    """The distinct prompts of the batch and each find's index among them ([B]). A find's prompt
    is its input's ``find_texts`` entry when given, else the name of its category."""
    texts = []
    for i, x in enumerate(batched_inputs):
        cats = (finds.image_index == i).nonzero().reshape(-1)
        given = x.get("find_texts")
        if given is not None:
            if len(given) != len(cats):
                raise ConfigError(f"input {i}: {len(given)} find_texts for {len(cats)} finds")
            texts.extend(str(t) for t in given)
            continue
        if class_names is None:
            raise ConfigError(
                "Sam3Image: no class names to prompt with; set DATASETS.TRAIN / DATASETS.TEST to datasets "
                "with thing_classes metadata, or give 'find_texts' in the inputs"
            )
        for c in finds.concepts[cats].tolist():
            if not 0 <= c < len(class_names):
                raise ConfigError(f"input {i}: concept id {c} outside the {len(class_names)} class names")
            texts.append(class_names[c])
    captions = list(dict.fromkeys(texts))
    index = {t: k for k, t in enumerate(captions)}
    return captions, torch.tensor([index[t] for t in texts], dtype=torch.long, device=finds.concepts.device)


def _masks_at_input_size(
    logits: Tensor, pad_hw: Tuple[int, int], image_hw: Tuple[int, int], out_hw: Tuple[int, int], logit_thr: float
) -> Tensor:
    """Mask logits [K, h', w'] -> bool masks [K, height, width]: resized to the padded batch
    frame, cropped to the image and resized to the input's original size."""
    if not logits.shape[0]:
        return torch.zeros((0, *out_hw), dtype=torch.bool, device=logits.device)
    m = F.interpolate(logits[None].float(), size=pad_hw, mode="bilinear", align_corners=False)[0]
    return sem_seg_postprocess(m, image_hw, *out_hw) > logit_thr


def detections_per_image(
    outputs: Dict[str, Any],
    finds: FindBatch,
    batched_inputs: Sequence[Mapping[str, Any]],
    pad_hw: Tuple[int, int],
    image_sizes: Sequence[Tuple[int, int]],
    score_threshold: float,
    mask_threshold: float,
    max_dets_per_find: int,
) -> List[Dict[str, Any]]:
    """Per image: ``instances`` (its finds' detections with score = presence probability x query
    probability above ``score_threshold``, at most ``max_dets_per_find`` per find, boxes XYXY,
    masks at the input's ``height`` x ``width`` when the outputs have ``pred_masks``,
    ``pred_classes`` = the find's concept) and ``finds`` (``categories`` [F], ``presence_scores`` [F])."""
    Hp, Wp = pad_hw
    prob = outputs["pred_logits"][..., 0].float().sigmoid()  # [B, Q]
    presence = outputs.get("presence_logit_dec")  # a model without a presence head: presence 1
    presence = presence.float().sigmoid().reshape(-1) if presence is not None else prob.new_ones(prob.shape[0])
    scores = prob * presence[:, None]
    scale = torch.tensor([Wp, Hp, Wp, Hp], dtype=torch.float32, device=prob.device)
    boxes = outputs["pred_boxes_xyxy"].float() * scale
    thr = mask_threshold
    mask_logit_thr = math.log(thr / (1 - thr)) if 0 < thr < 1 else (-math.inf if thr == 0 else math.inf)
    results = []
    for i, inp in enumerate(batched_inputs):
        h, w = image_sizes[i]
        height, width = int(inp.get("height", h)), int(inp.get("width", w))
        find_ids = (finds.image_index == i).nonzero().reshape(-1)
        sel_find, sel_query = [], []
        for b in find_ids.tolist():
            keep = (scores[b] > score_threshold).nonzero().reshape(-1)
            if keep.numel() > max_dets_per_find:
                keep = keep[scores[b][keep].topk(max_dets_per_find).indices]
            sel_find.append(torch.full_like(keep, b))
            sel_query.append(keep)
        empty = torch.zeros(0, dtype=torch.long, device=prob.device)
        fb = torch.cat(sel_find) if sel_find else empty
        qb = torch.cat(sel_query) if sel_query else empty
        box = boxes[fb, qb]
        box[:, 0::2] = box[:, 0::2].clamp(0, w) * (width / w)
        box[:, 1::2] = box[:, 1::2].clamp(0, h) * (height / h)
        inst = Instances((height, width))
        inst.pred_boxes = box
        if "pred_masks" in outputs:  # a model without a segmentation head predicts boxes only
            inst.pred_masks = _masks_at_input_size(
                outputs["pred_masks"][fb, qb], (Hp, Wp), (h, w), (height, width), mask_logit_thr
            )
        inst.scores = scores[fb, qb]
        inst.pred_classes = finds.concepts[fb].long()
        finds_out = {"categories": finds.concepts[find_ids].cpu(), "presence_scores": presence[find_ids].cpu()}
        results.append({"instances": inst, "finds": finds_out})
    return results
