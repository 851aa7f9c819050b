"""``ImagePredictor``: the official ``SAM2ImagePredictor`` calls and semantics on a SAM 2 model:
``set_image`` once, then ``predict`` with points, a box and / or a mask input.

    predictor = ImagePredictor(build_sam2(cfg))
    predictor.set_image(image)                            # uint8 RGB [H, W, 3]
    masks, ious, low_res = predictor.predict(point_coords=[[x, y]], point_labels=[1])
"""

from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .video_frames import IMG_MEAN, IMG_STD

__all__ = ["ImagePredictor"]


class ImagePredictor:
    """Single-image prompting of a ``SAM2Base`` (eval mode). mask_threshold: logits above it
    are the mask when ``return_logits`` is False."""

    def __init__(self, model, mask_threshold: float = 0.0):
        self.model = model
        self.mask_threshold = mask_threshold
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_predictor(self) -> None:
        self._features = None
        self._orig_hw: Optional[Tuple[int, int]] = None

    @torch.no_grad()
    def set_image(self, image) -> None:
        """image: uint8 RGB [H, W, 3]. Computes the image embedding (with no_mem_embed, as the
        official predictor) and the high-res features."""
        self.reset_predictor()
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"set_image: the image must be RGB [H, W, 3], got {list(arr.shape)}")
        self._orig_hw = arr.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div(255.0)[None]
        size = self.model.image_size
        # bilinear with antialiasing, as torchvision's Resize on a tensor
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = (x - torch.tensor(IMG_MEAN)[:, None, None]) / torch.tensor(IMG_STD)[:, None, None]
        backbone_out = self.model.forward_image(x.to(self.device))
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(vision_feats, feat_sizes)]
        self._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    def _transform_coords(self, coords: Tensor, normalize: bool) -> Tensor:
        if normalize:
            h, w = self._orig_hw
            coords = coords.clone()
            coords[..., 0] = coords[..., 0] / w
            coords[..., 1] = coords[..., 1] / h
        return coords * self.model.image_size

    @torch.no_grad()
    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """point_coords: [P, 2] (or [B, P, 2]) (x, y) image pixels (in [0, 1] with
        ``normalize_coords=False``); point_labels: [P] 1 / 0; box: [4] or [B, 4] x0 y0 x1 y1;
        mask_input: low-res logits [1, h, w] of a previous ``predict``. Returns (masks [C, H, W]
        (bool, or logits with ``return_logits``), IoU predictions [C], low-res logits [C, h, w])
        with C = 3 with ``multimask_output`` else 1 (a leading B with batched prompts)."""
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied if point_coords is supplied.")
            coords = self._transform_coords(torch.as_tensor(point_coords, dtype=torch.float), normalize_coords)
            labels = torch.as_tensor(point_labels, dtype=torch.int)
            if coords.dim() == 2:
                coords, labels = coords[None], labels[None]
            points = (coords.to(self.device), labels.to(self.device))
        if box is not None:
            box = torch.as_tensor(box, dtype=torch.float).reshape(-1, 2, 2)
            box_coords = self._transform_coords(box, normalize_coords).to(self.device)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=self.device).repeat(box_coords.size(0), 1)
            if points is not None:
                points = (torch.cat([box_coords, points[0]], dim=1), torch.cat([box_labels, points[1]], dim=1))
            else:
                points = (box_coords, box_labels)
        masks_in = None
        if mask_input is not None:
            masks_in = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
            if masks_in.dim() == 3:
                masks_in = masks_in[None]
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=masks_in)
        batched = points is not None and points[0].shape[0] > 1
        high_res: List[Tensor] = list(self._features["high_res_feats"])
        low_res_masks, iou_predictions, _, _ = self.model.sam_mask_decoder(
            image_embeddings=self._features["image_embed"],
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=batched,
            high_res_features=high_res,
        )
        masks = F.interpolate(low_res_masks.float(), self._orig_hw, mode="bilinear", align_corners=False)
        low_res_masks = torch.clamp(low_res_masks, -32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        return (
            masks.squeeze(0).float().cpu().numpy(),
            iou_predictions.squeeze(0).float().cpu().numpy(),
            low_res_masks.squeeze(0).float().cpu().numpy(),
        )
