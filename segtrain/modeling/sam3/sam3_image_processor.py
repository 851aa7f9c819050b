"""``Sam3Processor``: the official SAM 3 image inference calls (set an image, prompt it with text
and / or boxes, read masks, boxes and scores) on a :class:`Sam3Image`; and
``build_image_processor(cfg)``, which builds the model from the config and loads
``MODEL.WEIGHTS`` (the released checkpoint as it is, or a segtrain checkpoint) strictly."""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from segtrain.checkpoint import load_model_weights, weights_prefixes
from segtrain.modeling.meta_arch.build import build_model
from segtrain.structures.instances import Instances

from .model_misc import box_cxcywh_to_xyxy
from .sam3_image import FindStage, Sam3Image

__all__ = ["Sam3Processor", "build_image_processor", "load_sam3_weights", "predict_instances"]

# text encoded when only boxes prompt the image (the official processor's placeholder)
_VISUAL_PLACEHOLDER = "visual"


def _image_to_chw_uint8(image) -> Tensor:
    """A uint8 RGB image [H, W, 3] (numpy), a PIL image, or a tensor [3, H, W] (uint8, or float in
    [0, 1]) -> uint8 tensor [3, H, W]."""
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, Tensor)):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"set_image: expected a uint8 RGB array [H, W, 3], got {image.dtype} {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"set_image: expected a tensor [3, H, W], got {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image
        if image.is_floating_point():
            return (image * 255).round().clamp(0, 255).to(torch.uint8)
        raise ValueError(f"set_image: tensor images must be uint8 or float in [0, 1], got {image.dtype}")
    raise ValueError(f"set_image: expected a numpy array, a PIL image or a tensor, got {type(image).__name__}")


class Sam3Processor:
    """Image inference with the official ``Sam3Processor`` calls.

    ``state = set_image(image)`` encodes the image; ``set_text_prompt(prompt, state)`` and
    ``add_geometric_prompt(box, label, state)`` (box: normalized cx, cy, w, h; label True for a
    positive box) run the detector and fill ``state`` with ``scores`` [N] (query probability
    x presence probability above the confidence threshold, in query order), ``boxes`` [N, 4]
    (xyxy pixels of the original image), ``masks_logits`` [N, 1, H, W] (mask probabilities,
    after the sigmoid, at the original size) and ``masks`` (``masks_logits > 0.5``).

    Unlike the official processor, a numpy image's size is read as (H, W) from its
    ``[H, W, 3]`` shape (the official code reads ``(W, 3)``, which misplaces boxes and masks).
    """

    def __init__(self, model: Sam3Image, resolution: int = 1008, device=None, confidence_threshold: float = 0.5):
        self.model = model
        self.resolution = resolution
        self.device = torch.device(device) if device is not None else model.device
        self.confidence_threshold = confidence_threshold
        self.find_stage = FindStage(
            img_ids=torch.tensor([0], device=self.device, dtype=torch.long),
            text_ids=torch.tensor([0], device=self.device, dtype=torch.long),
        )

    def preprocess(self, image) -> Tensor:
        """Image -> normalized batch [1, 3, resolution, resolution] in [-1, 1] (antialiased
        bilinear resize of the uint8 image, as torchvision's ``v2.Resize`` does)."""
        chw = _image_to_chw_uint8(image).to(self.device)
        resized = F.interpolate(
            chw[None], size=(self.resolution, self.resolution), mode="bilinear", antialias=True, align_corners=False
        )
        return (resized.float() / 255.0 - 0.5) / 0.5

    @torch.inference_mode()
    def set_image(self, image, state: Optional[Dict] = None) -> Dict:
        state = {} if state is None else state
        height, width = _image_to_chw_uint8(image).shape[-2:]
        state["original_height"] = int(height)
        state["original_width"] = int(width)
        state["backbone_out"] = self.model.backbone.forward_image(self.preprocess(image))
        return state

    @torch.inference_mode()
    def set_text_prompt(self, prompt: str, state: Dict) -> Dict:
        if "backbone_out" not in state:
            raise ValueError("set_text_prompt: call set_image first")
        state["backbone_out"].update(self.model.backbone.forward_text([prompt], device=self.device))
        if "geometric_prompt" not in state:
            state["geometric_prompt"] = self.model._get_dummy_prompt()
        return self._forward_grounding(state)

    @torch.inference_mode()
    def add_geometric_prompt(self, box: Sequence[float], label: bool, state: Dict) -> Dict:
        """Add a box (normalized cx, cy, w, h) as a positive (``label`` True) or negative prompt."""
        if "backbone_out" not in state:
            raise ValueError("add_geometric_prompt: call set_image first")
        if len(box) != 4:
            raise ValueError(f"add_geometric_prompt: box must be [cx, cy, w, h] (normalized), got {box!r}")
        if "language_features" not in state["backbone_out"]:
            state["backbone_out"].update(self.model.backbone.forward_text([_VISUAL_PLACEHOLDER], device=self.device))
        if "geometric_prompt" not in state:
            state["geometric_prompt"] = self.model._get_dummy_prompt()
        boxes = torch.tensor(box, device=self.device, dtype=torch.float32).view(1, 1, 4)
        labels = torch.tensor([bool(label)], device=self.device, dtype=torch.bool).view(1, 1)
        state["geometric_prompt"].append_boxes(boxes, labels)
        return self._forward_grounding(state)

    def reset_all_prompts(self, state: Dict) -> None:
        """Remove the prompts and the results; the image stays set."""
        for key in ("language_features", "language_mask", "language_embeds"):
            state.get("backbone_out", {}).pop(key, None)
        for key in ("geometric_prompt", "boxes", "masks", "masks_logits", "scores"):
            state.pop(key, None)

    @torch.inference_mode()
    def set_confidence_threshold(self, threshold: float, state: Optional[Dict] = None):
        """Set the threshold; with a prompted ``state``, run again and return it."""
        self.confidence_threshold = threshold
        if state is not None and "boxes" in state:
            return self._forward_grounding(state)
        return state

    @torch.inference_mode()
    def _forward_grounding(self, state: Dict) -> Dict:
        outputs = self.model.forward_grounding(
            backbone_out=state["backbone_out"], find_input=self.find_stage, geometric_prompt=state["geometric_prompt"]
        )
        presence = outputs["presence_logit_dec"].sigmoid().unsqueeze(1)  # [1, 1, 1]
        probs = (outputs["pred_logits"].sigmoid() * presence).squeeze(-1)  # [1, Q]
        keep = probs > self.confidence_threshold
        img_h, img_w = state["original_height"], state["original_width"]
        scale = torch.tensor([img_w, img_h, img_w, img_h], device=probs.device, dtype=torch.float32)
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"][keep]) * scale[None, :]
        masks = outputs["pred_masks"][keep].unsqueeze(1)  # [N, 1, h, w]
        if masks.numel() > 0:
            masks = F.interpolate(masks, (img_h, img_w), mode="bilinear", align_corners=False)
        else:
            masks = masks.new_zeros((0, 1, img_h, img_w))
        masks = masks.sigmoid()
        state["masks_logits"] = masks
        state["masks"] = masks > 0.5
        state["boxes"] = boxes
        state["scores"] = probs[keep]
        return state


def load_sam3_weights(model: Sam3Image, path: str, cfg=None) -> List[str]:
    """Load ``path`` (the released checkpoint or a segtrain checkpoint) into ``model`` strictly
    (``segtrain.checkpoint.load_model_weights``, through ``Sam3Image.convert_weights``; ``cfg``'s
    ``MODEL.WEIGHTS_*_PREFIXES`` when given); returns the checkpoint keys the model set aside.
    Any other mismatch is a one-line error."""
    prefixes = weights_prefixes(cfg) if cfg is not None else {}
    return load_model_weights(model, path, **prefixes).set_aside


def build_image_processor(cfg) -> Sam3Processor:
    """A :class:`Sam3Processor` on ``Sam3Image(cfg)`` in eval mode, with ``MODEL.WEIGHTS`` loaded
    (when set), at ``MODEL.SAM3.IMAGE_SIZE`` and ``MODEL.SAM3.TEST.CONFIDENCE_THRESHOLD``."""
    model = build_model(cfg)
    if not isinstance(model, Sam3Image):
        raise ValueError(
            f"build_image_processor: MODEL.META_ARCHITECTURE must be 'Sam3Image', got {type(model).__name__}"
        )
    if cfg.MODEL.WEIGHTS:
        load_sam3_weights(model, cfg.MODEL.WEIGHTS, cfg)
    model.eval()
    return Sam3Processor(
        model,
        resolution=cfg.MODEL.SAM3.IMAGE_SIZE,
        device=model.device,
        confidence_threshold=cfg.MODEL.SAM3.TEST.CONFIDENCE_THRESHOLD,
    )


def predict_instances(processor: Sam3Processor, image, prompts: Sequence[str]) -> Instances:
    """Detections of each text prompt on one image, as ``Instances((H, W))`` with
    ``pred_boxes`` [N, 4] xyxy pixels, ``pred_masks`` bool [N, H, W], ``scores`` [N] and
    ``pred_classes`` [N] (the index of the prompt in ``prompts``); prompts run one at a time."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError(f"predict_instances: prompts must be a non-empty list of str, got {prompts!r}")
    state = processor.set_image(image)
    boxes, masks, scores, classes = [], [], [], []
    for index, prompt in enumerate(prompts):
        processor.reset_all_prompts(state)
        state = processor.set_text_prompt(prompt, state)
        boxes.append(state["boxes"])
        masks.append(state["masks"][:, 0])
        scores.append(state["scores"])
        classes.append(torch.full((len(state["scores"]),), index, dtype=torch.long, device=state["scores"].device))
    result = Instances((state["original_height"], state["original_width"]))
    result.pred_boxes = torch.cat(boxes)
    result.pred_masks = torch.cat(masks)
    result.scores = torch.cat(scores)
    result.pred_classes = torch.cat(classes)
    return result
