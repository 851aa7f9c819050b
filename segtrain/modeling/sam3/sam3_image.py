"""The SAM 3 image model: prompts (text and geometry) fused with ViT image features, a DETR
decoder with presence token scoring the queries against the prompt, and a segmentation head.
Module tree and parameter names are the official ``Sam3Image``'s."""

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.data.catalog import thing_classes_of
from segtrain.data.find.collate import collate_find_targets, find_batch_from_inputs
from segtrain.modeling.criterion.build import build_criterion
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY
from segtrain.utils.errors import ConfigError

from .find_adapter import batch_images, detections_per_image, find_captions
from .geometry_encoders import Prompt
from .model_builder import sam3_components
from .model_misc import box_cxcywh_to_xyxy, inverse_sigmoid
from .tokenizer_ve import SimpleTokenizer

__all__ = ["Sam3Image", "FindStage", "build_sam3_image_model", "sam3_sizes_from_cfg", "criterion_for_model"]

logger = logging.getLogger(__name__)

# Prefixes of the released checkpoint: the image model under "detector.", and parts of the video
# model that the image model does not have (the tracker, the SAM 2 copy of the neck).
_CHECKPOINT_PREFIX = "detector."
_SET_ASIDE_PREFIXES = ("tracker.", "detector.backbone.vision_backbone.sam2_convs.")


def sam3_sizes_from_cfg(cfg) -> Dict:
    """``sam3_components`` keyword arguments from ``MODEL.SAM3``."""
    s = cfg.MODEL.SAM3
    return dict(
        img_size=s.IMAGE_SIZE,
        patch_size=s.PATCH_SIZE,
        vit_embed_dim=s.VIT.EMBED_DIM,
        vit_depth=s.VIT.DEPTH,
        vit_num_heads=s.VIT.NUM_HEADS,
        vit_mlp_ratio=s.VIT.MLP_RATIO,
        vit_window_size=s.VIT.WINDOW_SIZE,
        vit_global_att_blocks=tuple(s.VIT.GLOBAL_ATT_BLOCKS),
        vit_pretrain_img_size=s.VIT.PRETRAIN_IMG_SIZE,
        vit_drop_path_rate=s.VIT.DROP_PATH_RATE,
        text_width=s.TEXT.WIDTH,
        text_heads=s.TEXT.HEADS,
        text_layers=s.TEXT.LAYERS,
        text_context_length=s.TEXT.CONTEXT_LENGTH,
        d_model=s.D_MODEL,
        num_heads=s.NUM_HEADS,
        dim_feedforward=s.DIM_FEEDFORWARD,
        dropout=s.DROPOUT,
        encoder_layers=s.ENCODER.NUM_LAYERS,
        decoder_layers=s.DECODER.NUM_LAYERS,
        num_queries=s.DECODER.NUM_QUERIES,
        geometry_layers=s.GEOMETRY.NUM_LAYERS,
        tokenizer=SimpleTokenizer(bpe_path=s.TEXT.BPE_PATH or None),
        use_act_checkpoint=s.USE_ACT_CHECKPOINT,
        enable_segmentation=s.ENABLE_SEGMENTATION,
    )


def criterion_for_model(cfg):
    """The configured criterion; without a segmentation head (``MODEL.SAM3.ENABLE_SEGMENTATION``
    False) the ``Masks`` loss of ``Sam3LossWrapper``'s ``LOSS_FNS`` is left out, and the log
    says so: one key switches masks on and off."""
    crit = cfg.MODEL.CRITERION
    if cfg.MODEL.SAM3.ENABLE_SEGMENTATION or crit.NAME != "Sam3LossWrapper" or "Masks" not in crit.SAM3.LOSS_FNS:
        return build_criterion(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.CRITERION.SAM3.LOSS_FNS = [name for name in crit.SAM3.LOSS_FNS if name != "Masks"]
    logger.info(
        "MODEL.SAM3.ENABLE_SEGMENTATION False: no segmentation head, so the Masks loss of "
        "MODEL.CRITERION.SAM3.LOSS_FNS is not built (losses: %s)",
        ", ".join(cfg.MODEL.CRITERION.SAM3.LOSS_FNS),
    )
    return build_criterion(cfg)


@dataclass
class FindStage:
    """One find query per row: the image it looks at (``img_ids`` [B]) and its text among the
    encoded captions (``text_ids`` [B]); box prompts travel separately as a :class:`Prompt`."""

    img_ids: Tensor
    text_ids: Tensor


def _update_out(out: Dict, name: str, value: Tensor, auxiliary: bool = True, update_aux: bool = True) -> None:
    """``out[name]`` = the last layer's value; the earlier layers go to ``out["aux_outputs"]``."""
    out[name] = value[-1] if auxiliary else value
    if auxiliary and update_aux:
        if "aux_outputs" not in out:
            out["aux_outputs"] = [{} for _ in range(len(value) - 1)]
        for aux_output, aux_value in zip(out["aux_outputs"], value[:-1]):
            aux_output[name] = aux_value


@META_ARCH_REGISTRY.register()
class Sam3Image(nn.Module):
    """The SAM 3 image model, built from ``MODEL.SAM3`` (``Sam3Image(cfg)``) or from its parts.

    ``forward_grounding(backbone_out, find_input, geometric_prompt)`` returns, per find:
    ``pred_logits`` [B, Q, 1], ``pred_boxes`` [B, Q, 4] (normalized cxcywh),
    ``pred_boxes_xyxy``, ``pred_masks`` [B, Q, 4S/p, 4S/p] (logits at the finest neck level, for
    S = image size, p = patch size), ``presence_logit_dec`` [B, 1], ``semantic_seg``
    [B, 1, 4S/p, 4S/p], ``queries`` [B, Q, C] and the encoder memory; in training also
    ``aux_outputs`` (earlier decoder layers) and the DAC one-to-many outputs (``*_o2m``).

    As a meta-architecture, ``forward(batched_inputs)`` takes ``FindDatasetMapper`` dicts and
    returns the criterion's losses (training) or each image's detections (eval).
    """

    @configurable
    def __init__(
        self,
        backbone: nn.Module,
        transformer: nn.Module,
        input_geometry_encoder: nn.Module,
        segmentation_head: Optional[nn.Module] = None,
        num_feature_levels: int = 1,
        o2m_mask_predict: bool = True,
        dot_prod_scoring: Optional[nn.Module] = None,
        criterion: Optional[nn.Module] = None,
        class_names: Optional[Sequence[str]] = None,
        image_size: int = 1008,
        pixel_mean: Sequence[float] = (127.5, 127.5, 127.5),
        pixel_std: Sequence[float] = (127.5, 127.5, 127.5),
        score_threshold: float = 0.0,
        mask_threshold: float = 0.5,
        max_dets_per_find: int = 100,
    ):
        """The official arguments, then those of training and evaluation on dataset finds:
        ``criterion`` (a find criterion such as ``Sam3LossWrapper``; it holds no tensors, so the
        state dict stays the official one), ``class_names`` (the text prompt of each concept id),
        the square input ``image_size``, pixel statistics (0-255) and the detection thresholds."""
        super().__init__()
        if dot_prod_scoring is None:
            raise ValueError("Sam3Image: dot_prod_scoring is required")
        if criterion is not None and getattr(criterion, "target_format", None) != "find_packed":
            raise ConfigError(
                f"Sam3Image trains on finds; MODEL.CRITERION.NAME={type(criterion).__name__!r} takes "
                f"{getattr(criterion, 'target_format', '?')!r} targets; use a find criterion such as 'Sam3LossWrapper'"
            )
        self.backbone = backbone
        self.geometry_encoder = input_geometry_encoder
        self.transformer = transformer
        self.hidden_dim = transformer.d_model
        self.num_feature_levels = num_feature_levels
        self.segmentation_head = segmentation_head
        self.o2m_mask_predict = o2m_mask_predict
        self.dot_prod_scoring = dot_prod_scoring
        self.dac = self.transformer.decoder.dac
        self.criterion = criterion
        self.class_names = None if class_names is None else list(class_names)
        self.image_size = int(image_size)
        # plain tensors, not buffers: the state dict stays the official one
        self._pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32)
        self._pixel_std = torch.tensor(pixel_std, dtype=torch.float32)
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_dets_per_find = int(max_dets_per_find)
        # Some parameters get no gradient in a step (the text projection and the dropped neck level
        # never, the box / point projections without geometric prompts), as in the official model:
        # under DDP this model needs find_unused_parameters=True.
        self.ddp_find_unused_parameters = True
        #: top-level keys of the prediction dict handed to the criterion
        keys = {"pred_logits", "pred_boxes", "pred_boxes_xyxy", "presence_logit_dec", "aux_outputs"}
        keys |= {f"{k}_o2m" for k in ("pred_logits", "pred_boxes", "pred_boxes_xyxy")} if self.dac else set()
        if segmentation_head is not None:
            keys |= {"pred_masks"} | ({"pred_masks_o2m"} if self.dac else set())
        self.output_keys = frozenset(keys)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        class_names = None
        for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
            names = thing_classes_of(name)
            if names:
                class_names = list(names)
                break
        t = cfg.MODEL.SAM3.TEST
        return dict(
            **sam3_components(**sam3_sizes_from_cfg(cfg)),
            criterion=criterion_for_model(cfg),
            class_names=class_names,
            image_size=cfg.MODEL.SAM3.IMAGE_SIZE,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            score_threshold=t.SCORE_THRESHOLD,
            mask_threshold=t.MASK_THRESHOLD,
            max_dets_per_find=t.MAX_DETS_PER_FIND,
        )

    def convert_weights(self, state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
        """The released SAM 3 checkpoint (one flat dict: ``detector.*``, ``tracker.*``) under this
        model's names: ``detector.`` stripped, the tracker and the SAM 2 neck copy
        (``detector.backbone.vision_backbone.sam2_convs.*``) set aside and returned by name, and
        ``segmentation_head.*`` too when this model has no segmentation head. A state without
        ``detector.`` keys (segtrain's own checkpoints) keeps its names."""
        set_aside_prefixes = _SET_ASIDE_PREFIXES
        if self.segmentation_head is None:
            set_aside_prefixes += ("detector.segmentation_head.", "segmentation_head.")
        if not any(k.startswith(_CHECKPOINT_PREFIX) for k in state):
            kept = {k: v for k, v in state.items() if not k.startswith(set_aside_prefixes)}
            return kept, [k for k in state if k not in kept]
        converted, set_aside = {}, []
        for key, value in state.items():
            if key.startswith(set_aside_prefixes):
                set_aside.append(key)
            elif key.startswith(_CHECKPOINT_PREFIX):
                converted[key[len(_CHECKPOINT_PREFIX) :]] = value
            else:
                converted[key] = value
        return converted, set_aside

    def forward(self, batched_inputs: List[Dict]):
        """``FindDatasetMapper`` inputs -> the criterion's losses (training) or, per image, the
        detections of its finds (eval; see ``find_adapter.detections_per_image``). Each find is
        prompted with the name of its category (or the input's ``find_texts``)."""
        device = self.device
        images, pad_hw, image_sizes = batch_images(
            batched_inputs, self.image_size, self._pixel_mean.to(device), self._pixel_std.to(device), device
        )
        if self.training:
            if self.criterion is None:
                raise ConfigError("Sam3Image was built without a criterion; it cannot run in training mode")
            finds = collate_find_targets(batched_inputs, pad_hw, device)
        else:
            finds = find_batch_from_inputs(batched_inputs, device)
        captions, text_ids = find_captions(finds, batched_inputs, self.class_names)
        backbone_out = self.backbone.forward_image(images)
        backbone_out.update(self.backbone.forward_text(captions, device=device))
        find_input = FindStage(img_ids=finds.image_index, text_ids=text_ids)
        outputs = self.forward_grounding(backbone_out, find_input, self._get_dummy_prompt(len(finds)))
        if self.training:
            return self.criterion(outputs, finds.targets)
        return detections_per_image(
            outputs,
            finds,
            batched_inputs,
            pad_hw,
            image_sizes,
            self.score_threshold,
            self.mask_threshold,
            self.max_dets_per_find,
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _get_img_feats(self, backbone_out: Dict, img_ids: Tensor):
        vis_feats = backbone_out["backbone_fpn"][-self.num_feature_levels :]
        vis_pos_enc = backbone_out["vision_pos_enc"][-self.num_feature_levels :]
        vis_feat_sizes = [x.shape[-2:] for x in vis_pos_enc]
        img_feats = [x[img_ids].flatten(2).permute(2, 0, 1) for x in vis_feats]  # [h * w, B, C]
        img_pos_embeds = [x[img_ids].flatten(2).permute(2, 0, 1) for x in vis_pos_enc]
        return img_feats, img_pos_embeds, vis_feat_sizes

    def _encode_prompt(self, backbone_out: Dict, find_input: FindStage, geometric_prompt: Prompt, encode_text=True):
        txt_feats = backbone_out["language_features"][:, find_input.text_ids]
        txt_masks = backbone_out["language_mask"][find_input.text_ids]
        img_feats, img_pos_embeds, vis_feat_sizes = self._get_img_feats(backbone_out, find_input.img_ids)
        geo_feats, geo_masks = self.geometry_encoder(
            geo_prompt=geometric_prompt, img_feats=img_feats, img_sizes=vis_feat_sizes, img_pos_embeds=img_pos_embeds
        )
        if not encode_text:
            return geo_feats, geo_masks
        return torch.cat([txt_feats, geo_feats], dim=0), torch.cat([txt_masks, geo_masks], dim=1)

    def _run_encoder(self, backbone_out: Dict, find_input: FindStage, prompt: Tensor, prompt_mask: Tensor) -> Dict:
        img_feats, img_pos_embeds, vis_feat_sizes = self._get_img_feats(backbone_out, find_input.img_ids)
        memory = self.transformer.encoder(
            src=list(img_feats),
            prompt=prompt,
            src_pos=list(img_pos_embeds),
            prompt_key_padding_mask=prompt_mask,
            prompt_pos=torch.zeros_like(prompt),
            feat_sizes=vis_feat_sizes,
        )
        return {
            "encoder_hidden_states": memory["memory"],
            "pos_embed": memory["pos_embed"],
            "padding_mask": memory["padding_mask"],
            "level_start_index": memory["level_start_index"],
            "spatial_shapes": memory["spatial_shapes"],
            "valid_ratios": memory["valid_ratios"],
            "vis_feat_sizes": vis_feat_sizes,
            "prompt_before_enc": prompt,
            "prompt_after_enc": memory.get("memory_text", prompt),
            "prompt_mask": prompt_mask,
        }

    def _run_decoder(self, encoder_out: Dict, out: Dict, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        memory = encoder_out["encoder_hidden_states"]
        bs = memory.shape[1]
        tgt = self.transformer.decoder.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        hs, reference_boxes, presence_logits, presence_feats = self.transformer.decoder(
            tgt=tgt,
            memory=memory,
            memory_key_padding_mask=encoder_out["padding_mask"],
            pos=encoder_out["pos_embed"],
            reference_boxes=None,
            level_start_index=encoder_out["level_start_index"],
            spatial_shapes=encoder_out["spatial_shapes"],
            valid_ratios=encoder_out["valid_ratios"],
            tgt_mask=None,
            memory_text=prompt,
            text_attention_mask=prompt_mask,
            apply_dac=self.dac and self.training,
        )
        hs = hs.transpose(1, 2)  # [layers, B, Q, C]
        reference_boxes = reference_boxes.transpose(1, 2)
        if presence_logits is not None:
            presence_logits = presence_logits.transpose(1, 2)  # [layers, B, 1]
        out["presence_feats"] = presence_feats
        self._update_scores_and_boxes(out, hs, reference_boxes, prompt, prompt_mask, presence_logits)
        return hs

    def _update_scores_and_boxes(self, out, hs, reference_boxes, prompt, prompt_mask, dec_presence_out=None):
        apply_dac = self.dac and self.training
        num_o2o = hs.size(2) // 2 if apply_dac else hs.size(2)
        out["queries"] = hs[-1][:, :num_o2o]
        outputs_class = self.dot_prod_scoring(hs, prompt, prompt_mask)
        outputs_coord = (inverse_sigmoid(reference_boxes) + self.transformer.decoder.bbox_embed(hs)).sigmoid()
        outputs_boxes_xyxy = box_cxcywh_to_xyxy(outputs_coord)
        if dec_presence_out is not None:
            _update_out(out, "presence_logit_dec", dec_presence_out, update_aux=self.training)
        outputs = {"pred_logits": outputs_class, "pred_boxes": outputs_coord, "pred_boxes_xyxy": outputs_boxes_xyxy}
        for name, value in outputs.items():
            _update_out(out, name, value[:, :, :num_o2o], update_aux=self.training)
        if apply_dac:
            for name, value in outputs.items():
                _update_out(out, f"{name}_o2m", value[:, :, num_o2o:], update_aux=self.training)

    def _run_segmentation_heads(self, out, backbone_out, img_ids, encoder_hidden_states, prompt, prompt_mask, hs):
        if self.segmentation_head is None:
            return
        num_o2o = hs.size(2) // 2 if (self.dac and self.training) else hs.size(2)
        obj_queries = hs if self.o2m_mask_predict else hs[:, :, :num_o2o]
        seg_outputs = self.segmentation_head(
            backbone_feats=backbone_out["backbone_fpn"],
            obj_queries=obj_queries,
            image_ids=img_ids,
            encoder_hidden_states=encoder_hidden_states,
            prompt=prompt,
            prompt_mask=prompt_mask,
        )
        for key, value in seg_outputs.items():
            if key in self.segmentation_head.instance_keys:
                out[key] = value[:, :num_o2o]
                if self.o2m_mask_predict and value.shape[1] > num_o2o:
                    out[f"{key}_o2m"] = value[:, num_o2o:]
            else:
                out[key] = value

    def forward_grounding(
        self, backbone_out: Dict, find_input: FindStage, geometric_prompt: Prompt, find_target=None
    ) -> Dict:
        prompt, prompt_mask = self._encode_prompt(backbone_out, find_input, geometric_prompt)
        encoder_out = self._run_encoder(backbone_out, find_input, prompt, prompt_mask)
        out = {
            "encoder_hidden_states": encoder_out["encoder_hidden_states"],
            "prev_encoder_out": {"encoder_out": encoder_out, "backbone_out": backbone_out},
        }
        hs = self._run_decoder(encoder_out, out, prompt, prompt_mask)
        self._run_segmentation_heads(
            out, backbone_out, find_input.img_ids, out["encoder_hidden_states"], prompt, prompt_mask, hs
        )
        return out

    def _get_dummy_prompt(self, num_prompts: int = 1) -> Prompt:
        """An empty geometric prompt for ``num_prompts`` finds."""
        device = self.device
        return Prompt(
            box_embeddings=torch.zeros(0, num_prompts, 4, device=device),
            box_mask=torch.zeros(num_prompts, 0, device=device, dtype=torch.bool),
        )

    def encode_image(self, images: Tensor) -> Dict:
        """Backbone features of normalized images [N, 3, S, S] (see ``SAM3VLBackbone.forward_image``)."""
        return self.backbone.forward_image(images)

    def encode_text(self, captions: List[str]) -> Dict:
        return self.backbone.forward_text(captions, device=self.device)


def build_sam3_image_model(**sizes) -> Sam3Image:
    """The SAM 3 image model with fresh weights; ``sizes`` as :func:`sam3_components` takes them
    (defaults: the released model)."""
    return Sam3Image(**sam3_components(**sizes))
