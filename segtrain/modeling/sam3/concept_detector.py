"""``ConceptDetector``: a SAM 3-style concept-prompted detector.

Given an image and a concept prompt (here a category id), it finds every instance of the
concept and says, with a presence head, whether the concept is in the image at all. The
prediction dict is the one ``Sam3LossWrapper`` (``Boxes``, ``IABCEMdetr``, ``Masks``)
consumes (docs/losses.md, "SAM 3"); a batch of images carries B finds (``FindDatasetMapper``).
"""

import logging
from typing import Any, Dict, List, Optional, Sequence

from torch import nn

from segtrain.config import configurable
from segtrain.data.find.collate import FindBatch, collate_find_targets, find_batch_from_inputs
from segtrain.layers.norm import get_norm
from segtrain.modeling.backbone.build import build_backbone
from segtrain.modeling.criterion.build import build_criterion
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY
from segtrain.modeling.meta_arch.pixel_normalizer import PixelNormalizer
from segtrain.modeling.pixel_decoder.fpn import BasePixelDecoder
from segtrain.structures.image_list import ImageList
from segtrain.utils.errors import ConfigError

from .find_adapter import detections_per_image
from .head import ConceptHead

__all__ = ["ConceptDetector"]

logger = logging.getLogger(__name__)

# FPN levels of BasePixelDecoder's multi_scale_features, coarsest first
_NUM_LEVELS = 3


@META_ARCH_REGISTRY.register()
class ConceptDetector(PixelNormalizer, nn.Module):
    """Backbone -> FPN pixel decoder -> :class:`ConceptHead` (fusion encoder, decoder with a
    presence token) -> criterion.

    Inputs: ``FindDatasetMapper`` outputs (``image``, ``instances``, ``find_categories``).
    Training: ``forward`` -> the criterion's loss dict on the packed find targets
    (``collate_find_targets``), one-to-many outputs included.
    Eval: one dict per image: ``"instances"``: ``Instances((height, width))`` with the
    detections of all its finds (``pred_classes`` = the find's concept, ``scores`` =
    presence probability x query probability above ``score_threshold``, ``pred_boxes`` XYXY,
    ``pred_masks`` bool), and ``"finds"``: ``{"categories": int64 [F], "presence_scores": [F]}``
    (presence probability of each find; 1 without a presence token).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_decoder: nn.Module,
        input_proj: nn.Module,
        head: ConceptHead,
        criterion: Optional[nn.Module],
        encoder_level: int,
        size_divisibility: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        score_threshold: float = 0.05,
        mask_threshold: float = 0.5,
        max_dets_per_find: int = 100,
    ):
        """
        backbone: {name: [N, C, H/s, W/s]}; pixel_decoder: ``forward_features`` ->
            (mask_features, _, multi_scale_features coarsest first); input_proj: maps the level
            ``encoder_level`` of multi_scale_features to the head's width.
        head: :class:`ConceptHead`; criterion: a find criterion (``target_format ==
            "find_packed"``) or None (eval only).
        size_divisibility: pad the batch to a multiple of this (< 0: the backbone's).
        pixel_mean, pixel_std: per channel, 0-255 range.
        score_threshold, mask_threshold, max_dets_per_find: inference (probabilities).
        """
        super().__init__()
        if criterion is not None and getattr(criterion, "target_format", None) != "find_packed":
            raise ConfigError(
                f"ConceptDetector trains on finds; MODEL.CRITERION.NAME={type(criterion).__name__!r} takes "
                f"{getattr(criterion, 'target_format', '?')!r} targets; use a find criterion such as 'Sam3LossWrapper'"
            )
        if not 0 <= mask_threshold <= 1:
            raise ConfigError(f"MODEL.CONCEPT.TEST.MASK_THRESHOLD must be in [0, 1], got {mask_threshold}")
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.input_proj = input_proj
        self.head = head
        self.criterion = criterion
        self.encoder_level = int(encoder_level)
        if size_divisibility < 0:
            size_divisibility = int(getattr(backbone, "size_divisibility", 0))
        self.size_divisibility = size_divisibility
        self.register_pixel_stats(pixel_mean, pixel_std)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_dets_per_find = int(max_dets_per_find)
        keys = {"pred_logits", "pred_boxes", "pred_boxes_xyxy", "pred_masks", "aux_outputs"}
        if head.presence_head is not None:
            keys.add("presence_logit_dec")
        if head.num_o2m_queries > 0:
            keys |= {"pred_logits_o2m", "pred_boxes_o2m", "pred_boxes_xyxy_o2m", "pred_masks_o2m"}
        if head.two_stage:
            keys.add("first_stage")
        #: top-level keys of the prediction dict handed to the criterion
        self.output_keys = frozenset(keys)

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        c = cfg.MODEL.CONCEPT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in c.IN_FEATURES if f not in shapes]
        if missing:
            raise ConfigError(
                f"MODEL.CONCEPT.IN_FEATURES {missing} are not backbone outputs; the backbone gives {sorted(shapes)} "
                "(MODEL.RESNETS.OUT_FEATURES)"
            )
        in_shapes = {k: shapes[k] for k in c.IN_FEATURES}
        strides = sorted((s.stride for s in in_shapes.values()), reverse=True)[:_NUM_LEVELS]
        if c.ENCODER_STRIDE not in strides:
            raise ConfigError(
                f"MODEL.CONCEPT.ENCODER_STRIDE={c.ENCODER_STRIDE} is not a pixel-decoder level; "
                f"valid: {', '.join(map(str, strides))}"
            )
        pixel_decoder = BasePixelDecoder(in_shapes, conv_dim=c.CONVS_DIM, mask_dim=c.MASK_DIM, norm=c.NORM)
        input_proj = nn.Sequential(nn.Conv2d(c.CONVS_DIM, c.HIDDEN_DIM, kernel_size=1), get_norm("GN", c.HIDDEN_DIM))
        criterion = build_criterion(cfg)
        # aux / first-stage masks only when a mask loss reads them (official Masks: compute_aux False)
        aux_masks = any(
            getattr(f, "compute_aux", False) and "pred_masks" in getattr(f, "required_output_keys", ())
            for f in getattr(criterion, "loss_fns_find", []) or []
        )
        head = ConceptHead(
            num_concepts=c.NUM_CONCEPTS,
            prompt_tokens=c.PROMPT_TOKENS,
            dim=c.HIDDEN_DIM,
            nheads=c.NHEADS,
            dim_feedforward=c.DIM_FEEDFORWARD,
            enc_layers=c.ENC_LAYERS,
            dec_layers=c.DEC_LAYERS,
            num_queries=c.NUM_QUERIES,
            num_o2m_queries=c.NUM_O2M_QUERIES,
            presence_token=c.PRESENCE_TOKEN,
            two_stage=c.TWO_STAGE,
            mask_dim=c.MASK_DIM,
            dropout=c.DROPOUT,
            aux_masks=aux_masks,
        )
        return {
            "backbone": backbone,
            "pixel_decoder": pixel_decoder,
            "input_proj": input_proj,
            "head": head,
            "criterion": criterion,
            "encoder_level": strides.index(c.ENCODER_STRIDE),
            "size_divisibility": c.SIZE_DIVISIBILITY,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "score_threshold": c.TEST.SCORE_THRESHOLD,
            "mask_threshold": c.TEST.MASK_THRESHOLD,
            "max_dets_per_find": c.TEST.MAX_DETS_PER_FIND,
        }

    # ------------------------------------------------------------------ forward
    def predict(self, images: ImageList, finds: FindBatch, with_o2m: bool) -> Dict[str, Any]:
        """The outputs dict of ``ConceptHead`` for the finds of an image batch."""
        features = self.backbone(images.tensor)
        mask_features, _, multi_scale = self.pixel_decoder.forward_features(features)
        src = self.input_proj(multi_scale[self.encoder_level])
        return self.head(src, mask_features, finds.image_index, finds.concepts, with_o2m=with_o2m)

    def forward(self, batched_inputs: List[Dict[str, Any]]):
        """batched_inputs: ``FindDatasetMapper`` outputs. Losses (training) or per-image
        results (eval); see the class docstring."""
        images = self.preprocess_image(batched_inputs)
        if self.training:
            if self.criterion is None:
                raise ConfigError("ConceptDetector was built without a criterion; it cannot run in training mode")
            finds = collate_find_targets(batched_inputs, tuple(images.tensor.shape[-2:]), self.device)
            outputs = self.predict(images, finds, with_o2m=True)
            return self.criterion(outputs, finds.targets)
        finds = find_batch_from_inputs(batched_inputs, self.device)
        # one-to-many queries are hidden from the one-to-one ones: leaving them out changes nothing
        outputs = self.predict(images, finds, with_o2m=False)
        return self.inference(outputs, finds, batched_inputs, images)

    # ------------------------------------------------------------------ inference
    def inference(
        self, outputs: Dict[str, Any], finds: FindBatch, batched_inputs: List[Dict[str, Any]], images: ImageList
    ) -> List[Dict[str, Any]]:
        """Per image: detections of its finds with score = presence x query probability
        (``find_adapter.detections_per_image``)."""
        return detections_per_image(
            outputs,
            finds,
            batched_inputs,
            tuple(images.tensor.shape[-2:]),
            images.image_sizes,
            self.score_threshold,
            self.mask_threshold,
            self.max_dets_per_find,
        )
