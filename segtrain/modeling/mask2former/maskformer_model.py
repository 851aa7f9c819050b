"""``MaskFormer`` meta-architecture (Mask2Former): backbone -> MaskFormerHead -> criterion,
with instance / semantic / panoptic inference.

Module names (``backbone``, ``sem_seg_head.pixel_decoder``, ``sem_seg_head.predictor``,
``criterion``) are the official ones, so an official checkpoint loads as is.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.modeling.backbone import build_backbone
from segtrain.modeling.criterion import build_criterion
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY
from segtrain.modeling.meta_arch.pixel_normalizer import PixelNormalizer
from segtrain.modeling.postprocessing import sem_seg_postprocess
from segtrain.structures.image_list import ImageList
from segtrain.structures.instances import Instances
from segtrain.structures.masks import masks_to_boxes
from segtrain.structures.targets import (
    DEFAULT_TARGET_FORMAT,
    convert_targets,
    instances_to_targets,
    is_class_agnostic,
)
from segtrain.utils.errors import ConfigError, DatasetError

from .mask_former_head import build_sem_seg_head

__all__ = ["MaskFormer"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class MaskFormer(PixelNormalizer, nn.Module):
    """Mask classification segmentation: backbone features -> pixel decoder + masked
    transformer decoder -> Q (class, mask) pairs.

    Training: ``forward(batched_inputs)`` -> the criterion's loss dict (with ``core_loss``).
    Eval: a list with one dict per image: ``"instances"`` (INSTANCE_ON), ``"sem_seg"``
    [K, height, width] (SEMANTIC_ON), ``"panoptic_seg"`` (PANOPTIC_ON); see docs/CONTRACTS.md.
    """

    #: Top-level keys the prediction dict handed to the criterion can hold (what a config-only
    #: check can know). An instance lists what it does produce: "pred_boxes" and
    #: "pred_boxes_xyxy" only with the box head (MODEL.MASK_FORMER.BOX_HEAD), for
    #: box-supervised criteria such as Sam3LossWrapper; build_model checks that instance set.
    output_keys = frozenset({"pred_logits", "pred_masks", "aux_outputs", "pred_boxes", "pred_boxes_xyxy"})

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        sem_seg_head: nn.Module,
        criterion: Optional[nn.Module],
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata: Any = None,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
        deep_supervision: bool = True,
    ):
        """
        backbone: module returning {name: [B, C, H/s, W/s]}; sem_seg_head: ``MaskFormerHead``;
        criterion: called as ``criterion(outputs, targets)`` in training (None: eval only).
        num_queries: Q. object_mask_threshold / overlap_threshold: panoptic inference.
        metadata: dataset metadata (``thing_dataset_id_to_contiguous_id`` tells things from
            stuff in panoptic inference; without it every class is a thing).
        size_divisibility: pad the batch to a multiple of this (< 0: the backbone's).
        sem_seg_postprocess_before_inference: resize mask logits to the original size before
            semantic inference (forced by instance / panoptic inference).
        pixel_mean, pixel_std: per-channel, in the input's 0-255 range.
        semantic_on / panoptic_on / instance_on: which results to produce in eval.
        test_topk_per_image: instances kept per image (top-k over Q x K scores).
        deep_supervision: hand aux_outputs to the criterion in training.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        if size_divisibility < 0:
            size_divisibility = int(getattr(backbone, "size_divisibility", 0))
        self.size_divisibility = size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_pixel_stats(pixel_mean, pixel_std)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.deep_supervision = deep_supervision
        if not (semantic_on or instance_on or panoptic_on):
            raise ConfigError(
                "MaskFormer: set at least one of MODEL.MASK_FORMER.TEST.{SEMANTIC_ON, INSTANCE_ON, PANOPTIC_ON}"
            )
        if not semantic_on and not sem_seg_postprocess_before_inference:
            raise ConfigError("MaskFormer: instance / panoptic inference needs SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE")
        keys = {"pred_logits", "pred_masks", "aux_outputs"}
        if getattr(getattr(sem_seg_head, "predictor", None), "bbox_embed", None) is not None:
            keys |= {"pred_boxes", "pred_boxes_xyxy"}
        self.output_keys = frozenset(keys)

    @classmethod
    def num_aux_outputs(cls, cfg) -> Tuple[int, str]:
        """Auxiliary outputs (one per decoder layer but the last, with deep supervision) and
        the config key that sets them."""
        mf = cfg.MODEL.MASK_FORMER
        return (int(mf.DEC_LAYERS) - 1 if mf.DEEP_SUPERVISION else 0), "MODEL.MASK_FORMER.DEC_LAYERS"

    @classmethod
    def disabled_outputs(cls, cfg) -> Dict[str, str]:
        """Inference outputs that ``cfg`` turns off: output key -> the switch that does it."""
        switches = {"instances": "INSTANCE_ON", "sem_seg": "SEMANTIC_ON", "panoptic_seg": "PANOPTIC_ON"}
        return {
            key: f"MODEL.MASK_FORMER.TEST.{sw}" for key, sw in switches.items() if not cfg.MODEL.MASK_FORMER.TEST[sw]
        }

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        criterion = build_criterion(cfg)
        needs_boxes = "pred_boxes" in tuple(getattr(criterion, "required_output_keys", ()) or ())
        if needs_boxes and not mf.BOX_HEAD:
            raise ConfigError(
                f"MODEL.CRITERION.NAME={cfg.MODEL.CRITERION.NAME!r} needs 'pred_boxes', which MaskFormer predicts only "
                "with its box head: set MODEL.MASK_FORMER.BOX_HEAD True"
            )
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "metadata": _train_metadata(cfg),
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or mf.TEST.PANOPTIC_ON or mf.TEST.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "deep_supervision": mf.DEEP_SUPERVISION,
        }

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, Any]]):
        """batched_inputs: mapper outputs (docs/CONTRACTS.md). Returns losses (training) or
        per-image results (eval); see the class docstring."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        outputs = self.sem_seg_head(features)

        if self.training:
            if self.criterion is None:
                raise ConfigError("MaskFormer was built without a criterion; it cannot run in training mode")
            targets = self.prepare_targets(batched_inputs, images)
            if not self.deep_supervision:
                outputs.pop("aux_outputs", None)
            if is_class_agnostic(self._target_format()):
                outputs = _objectness_outputs(outputs)
            return self.criterion(outputs, targets)
        return self.inference(outputs, batched_inputs, images)

    def _target_format(self) -> str:
        return getattr(self.criterion, "target_format", DEFAULT_TARGET_FORMAT)

    def prepare_targets(self, batched_inputs: List[Dict[str, Any]], images: ImageList):
        """Ground truth from each input's ``instances`` (``{labels [n], masks [n, Hp, Wp]
        (zero-padded to the batch size), boxes [n, 4]}`` per image) converted by
        ``segtrain.structures.targets.convert_targets`` to the criterion's ``target_format``."""
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise DatasetError(
                    f"MaskFormer training: input {i} (image_id {x.get('image_id', '?')}) has no 'instances'; "
                    "use a training mapper that keeps annotations"
                )
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        targets = instances_to_targets(gt, image_size=tuple(images.tensor.shape[-2:]))
        return convert_targets(self._target_format(), targets, images.image_sizes)

    # ------------------------------------------------------------------ inference
    def inference(self, outputs: Dict[str, Any], batched_inputs: List[Dict[str, Any]], images: ImageList):
        """Per-image results from the final prediction (aux predictions are not used)."""
        mask_cls_results = outputs["pred_logits"]
        # upsample to the padded input size (one call for the whole batch)
        mask_pred_results = F.interpolate(
            outputs["pred_masks"], size=tuple(images.tensor.shape[-2:]), mode="bilinear", align_corners=False
        )
        del outputs

        processed = []
        for mask_cls, mask_pred, inp, image_size in zip(
            mask_cls_results, mask_pred_results, batched_inputs, images.image_sizes
        ):
            height = int(inp.get("height", image_size[0]))
            width = int(inp.get("width", image_size[1]))
            res: Dict[str, Any] = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = sem_seg_postprocess(mask_pred, image_size, height, width)
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                r = self.semantic_inference(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    r = sem_seg_postprocess(r, image_size, height, width)
                res["sem_seg"] = r
            if self.panoptic_on:
                res["panoptic_seg"] = self.panoptic_inference(mask_cls, mask_pred)
            if self.instance_on:
                res["instances"] = self.instance_inference(mask_cls, mask_pred)
            processed.append(res)
        return processed

    def semantic_inference(self, mask_cls: Tensor, mask_pred: Tensor) -> Tensor:
        """mask_cls [Q, K+1] logits, mask_pred [Q, H, W] logits -> [K, H, W] class scores
        ``sum_q softmax(cls_q)[:K] * sigmoid(mask_q)``."""
        mask_cls = F.softmax(mask_cls, dim=-1)[..., :-1]
        return torch.einsum("qc,qhw->chw", mask_cls, mask_pred.sigmoid())

    def _thing_ids(self) -> Optional[set]:
        mapping = None if self.metadata is None else getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        return None if mapping is None else set(int(v) for v in mapping.values())

    def panoptic_inference(self, mask_cls: Tensor, mask_pred: Tensor):
        """Official panoptic merging. mask_cls [Q, K+1], mask_pred [Q, H, W] logits ->
        (panoptic_seg int32 [H, W] of segment ids (0 = void), segments_info list of
        {"id", "isthing", "category_id"})."""
        num_classes = self.sem_seg_head.num_classes
        scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
        mask_pred = mask_pred.sigmoid()
        keep = labels.ne(num_classes) & (scores > self.object_mask_threshold)
        cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
        cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks

        h, w = cur_masks.shape[-2:]
        panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
        segments_info: List[Dict[str, Any]] = []
        if cur_masks.shape[0] == 0:
            return panoptic_seg, segments_info

        thing_ids = self._thing_ids()
        cur_mask_ids = cur_prob_masks.argmax(0)
        # per-candidate areas in one go (a few host reads instead of 3 per candidate)
        owned = cur_mask_ids.unsqueeze(0) == torch.arange(len(cur_classes), device=cur_masks.device).view(-1, 1, 1)
        fg = cur_masks >= 0.5
        mask_areas = owned.flatten(1).sum(1).tolist()
        original_areas = fg.flatten(1).sum(1).tolist()
        final_areas = (owned & fg).flatten(1).sum(1).tolist()
        classes = cur_classes.tolist()
        stuff_memory: Dict[int, int] = {}
        segment_id = 0
        for k, pred_class in enumerate(classes):
            isthing = thing_ids is None or pred_class in thing_ids
            if not (mask_areas[k] > 0 and original_areas[k] > 0 and final_areas[k] > 0):
                continue
            if mask_areas[k] / original_areas[k] < self.overlap_threshold:
                continue
            mask = owned[k] & fg[k]
            if not isthing:  # merge stuff regions of the same class
                if pred_class in stuff_memory:
                    panoptic_seg[mask] = stuff_memory[pred_class]
                    continue
                stuff_memory[pred_class] = segment_id + 1
            segment_id += 1
            panoptic_seg[mask] = segment_id
            segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": int(pred_class)})
        return panoptic_seg, segments_info

    def instance_inference(self, mask_cls: Tensor, mask_pred: Tensor):
        """Top-k (query, class) pairs as instances.

        mask_cls [Q, K+1] logits; mask_pred [Q, H, W] logits at the output size. Scores of
        the k = ``test_topk_per_image`` best of the Q*K softmax scores (no-object column
        dropped), each times its mask score: the mean sigmoid inside the binarized mask
        ``(logit > 0)``. Returns ``Instances((H, W))`` with ``pred_masks`` bool [k, H, W],
        ``pred_boxes`` [k, 4] XYXY (tight boxes of the masks, zeros when empty),
        ``scores`` [k], ``pred_classes`` int64 [k].
        """
        image_size = tuple(mask_pred.shape[-2:])
        num_classes = self.sem_seg_head.num_classes
        scores = F.softmax(mask_cls, dim=-1)[:, :-1]  # [Q, K]
        k = min(self.test_topk_per_image, scores.numel())
        scores_per_image, topk_indices = scores.flatten(0, 1).topk(k, sorted=False)
        labels_per_image = topk_indices % num_classes
        query_indices = topk_indices // num_classes
        mask_pred = mask_pred[query_indices]

        if self.panoptic_on:  # panoptic models: instances are the "thing" classes only
            thing_ids = self._thing_ids()
            if thing_ids is not None:
                keep = torch.tensor(
                    [int(c) in thing_ids for c in labels_per_image.tolist()], dtype=torch.bool, device=mask_pred.device
                )
                scores_per_image, labels_per_image = scores_per_image[keep], labels_per_image[keep]
                mask_pred = mask_pred[keep]

        binary = mask_pred > 0
        binary_f = binary.flatten(1).to(mask_pred.dtype)
        mask_scores = (mask_pred.sigmoid().flatten(1) * binary_f).sum(1) / (binary_f.sum(1) + 1e-6)
        result = Instances(image_size)
        result.pred_masks = binary
        result.pred_boxes = masks_to_boxes(binary)
        result.scores = scores_per_image * mask_scores
        result.pred_classes = labels_per_image.long()
        return result


def _objectness_logit(logits: Tensor) -> Tensor:
    """[..., K+1] class logits (index K = no object) -> [..., 1] logit of "some object":
    ``log(sum_k<K exp x_k) - x_K``, whose sigmoid is ``1 - softmax(x)[K]``."""
    return (torch.logsumexp(logits[..., :-1], dim=-1) - logits[..., -1]).unsqueeze(-1)


def _objectness_outputs(outputs: Dict[str, Any]) -> Dict[str, Any]:
    """The predictions with ``pred_logits`` [B, Q, K+1] turned into the one-logit ``[B, Q, 1]``
    of a class-agnostic criterion (``is_class_agnostic(target_format)``), aux outputs too."""
    out = dict(outputs)
    out["pred_logits"] = _objectness_logit(outputs["pred_logits"])
    if outputs.get("aux_outputs"):
        out["aux_outputs"] = [dict(a, pred_logits=_objectness_logit(a["pred_logits"])) for a in outputs["aux_outputs"]]
    return out


def _train_metadata(cfg):
    """Metadata with the classes the model predicts (which are things, for panoptic
    inference): the first training dataset's, else -- when it has no class mapping, e.g. an
    ``--eval-only`` run whose training data is not registered here -- the first test dataset's."""
    names = [n for n in list(cfg.DATASETS.TRAIN)[:1] + list(cfg.DATASETS.TEST)[:1] if n in DatasetCatalog]
    for name in names:
        meta = MetadataCatalog.get(name)
        if getattr(meta, "thing_dataset_id_to_contiguous_id", None) is not None:
            return meta
    return MetadataCatalog.get(names[0]) if names else None
