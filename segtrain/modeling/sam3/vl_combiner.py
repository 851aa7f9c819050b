"""SAM 3's backbone: the vision neck (``vision_backbone``) and the text encoder
(``language_backbone``) side by side, without fusion."""

from typing import Dict, List, Optional

from torch import Tensor, nn

__all__ = ["SAM3VLBackbone"]


class SAM3VLBackbone(nn.Module):
    """``forward_image(images)`` -> ``vision_features`` [B, C, h, w] (the coarsest kept level),
    ``vision_pos_enc`` and ``backbone_fpn`` (lists over levels, largest first; the last ``scalp``
    levels of the neck are dropped) and ``sam2_backbone_out`` (None: no tracker neck here).

    ``forward_text(captions)`` -> ``language_features`` [L, N, C], ``language_mask`` [N, L] (True
    at padding) and ``language_embeds`` [L, N, width]; ``additional_text`` is encoded in the same
    pass and returned under ``additional_text_features`` / ``additional_text_mask``.
    """

    def __init__(self, visual: nn.Module, text: Optional[nn.Module], scalp: int = 0):
        super().__init__()
        self.vision_backbone = visual
        self.language_backbone = text
        self.scalp = scalp

    def forward(self, samples: Tensor, captions: List[str], input_boxes=None, additional_text=None) -> Dict:
        output = self.forward_image(samples)
        device = output["vision_features"].device
        output.update(self.forward_text(captions, input_boxes, additional_text, device))
        return output

    def forward_image(self, samples: Tensor) -> Dict:
        num_levels = len(self.vision_backbone.convs) - self.scalp
        features, positions, _, _ = self.vision_backbone(samples, num_levels=num_levels)
        return {
            "vision_features": features[-1],
            "vision_pos_enc": positions,
            "backbone_fpn": features,
            "sam2_backbone_out": None,
        }

    def forward_text(self, captions: List[str], input_boxes=None, additional_text=None, device=None) -> Dict:
        if self.language_backbone is None:
            raise ValueError("SAM3VLBackbone: no language backbone to encode text with")
        text_to_encode = list(captions) + list(additional_text or [])
        mask, memory, embeds = self.language_backbone(text_to_encode, input_boxes, device=device)
        output = {}
        if additional_text:
            output["additional_text_features"] = memory[:, -len(additional_text) :]
            output["additional_text_mask"] = mask[-len(additional_text) :]
        n = len(captions)
        output["language_features"] = memory[:, :n]
        output["language_mask"] = mask[:n]
        output["language_embeds"] = embeds[:, :n]
        return output
