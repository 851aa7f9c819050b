"""``MaskFormerHead``: the pixel decoder plus the transformer predictor (official names)."""

import logging
from typing import Dict, Optional

from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.modeling.pixel_decoder.build import build_pixel_decoder
from segtrain.utils.errors import ConfigError

from .transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY

__all__ = ["MaskFormerHead", "build_sem_seg_head"]

logger = logging.getLogger(__name__)

# What the predictor can read, besides a backbone feature name
_IN_FEATURE_CHOICES = ("multi_scale_pixel_decoder", "transformer_encoder", "pixel_embedding")


class MaskFormerHead(nn.Module):
    """Runs ``pixel_decoder.forward_features`` then ``predictor`` on the chosen features.

    forward(features: {name: [B, C_f, H/s_f, W/s_f]}) -> the predictor's dict
    (``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, H/4, W/4], ``aux_outputs``).
    """

    _version = 2

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Official version-1 checkpoints keep the pixel decoder's weights directly under
        # sem_seg_head.; version 2 keeps them under sem_seg_head.pixel_decoder.
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            renamed = False
            for k in list(state_dict.keys()):
                if (
                    k.startswith(prefix)
                    and not k.startswith(prefix + "predictor.")
                    and not k.startswith(prefix + "pixel_decoder.")
                ):
                    state_dict[prefix + "pixel_decoder." + k[len(prefix) :]] = state_dict.pop(k)
                    renamed = True
            if renamed:
                logger.warning("MaskFormerHead: moved old pixel-decoder weights under %spixel_decoder.", prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @configurable
    def __init__(
        self,
        input_shape: Dict,
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        input_shape: {feature name: ShapeSpec} of the features the head reads.
        num_classes: K (without the "no object" class).
        pixel_decoder: module with ``forward_features(features)`` ->
            (mask_features, transformer_encoder_features, multi_scale_features).
        transformer_predictor: e.g. ``MultiScaleMaskedTransformerDecoder``.
        transformer_in_feature: "multi_scale_pixel_decoder", "transformer_encoder",
            "pixel_embedding" or a backbone feature name.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict):
        head = cfg.MODEL.SEM_SEG_HEAD
        if head.NAME != "MaskFormerHead":
            raise ConfigError(f"MODEL.SEM_SEG_HEAD.NAME {head.NAME!r} is not supported; valid: 'MaskFormerHead'")
        in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if in_feature in ("transformer_encoder", "multi_scale_pixel_decoder"):
            in_channels = head.CONVS_DIM
        elif in_feature == "pixel_embedding":
            in_channels = head.MASK_DIM
        elif in_feature in input_shape:
            in_channels = input_shape[in_feature].channels
        else:
            raise ConfigError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE {in_feature!r} is unknown; valid: "
                f"{', '.join(list(_IN_FEATURE_CHOICES) + sorted(input_shape))}"
            )
        predictor = TRANSFORMER_DECODER_REGISTRY.get(cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME)(
            cfg, in_channels, mask_classification=True
        )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": in_feature,
            "transformer_predictor": predictor,
        }

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> Dict:
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(features)
        if self.transformer_in_feature == "multi_scale_pixel_decoder":
            return self.predictor(multi_scale_features, mask_features, mask)
        if self.transformer_in_feature == "transformer_encoder":
            if encoder_features is None:
                raise ConfigError("TRANSFORMER_IN_FEATURE 'transformer_encoder' needs a pixel decoder with an encoder")
            return self.predictor(encoder_features, mask_features, mask)
        if self.transformer_in_feature == "pixel_embedding":
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[self.transformer_in_feature], mask_features, mask)


def build_sem_seg_head(cfg, input_shape: Dict) -> nn.Module:
    """The ``MODEL.SEM_SEG_HEAD`` head for backbone features of ``input_shape``."""
    return MaskFormerHead(cfg, input_shape)
