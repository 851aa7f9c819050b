"""``build_video_predictor(cfg)`` / ``build_image_predictor(cfg)``: the SAM 2 model of
``MODEL.SAM2`` with ``MODEL.WEIGHTS`` loaded strictly, in eval mode, wrapped in the official
predictor calls."""

from segtrain.checkpoint import WeightsMatch, load_model_weights, weights_prefixes
from segtrain.modeling.meta_arch.build import resolve_device

from .build_sam import sam2_base_kwargs
from .image_predictor import ImagePredictor
from .predictor import VideoPredictor
from .sam2_base import SAM2Base

__all__ = ["build_sam2", "build_video_predictor", "build_image_predictor", "load_sam2_weights"]


def load_sam2_weights(model: SAM2Base, path: str, cfg=None) -> WeightsMatch:
    """Load a checkpoint (``{"model": state_dict}`` as released, or a segtrain checkpoint)
    strictly (``segtrain.checkpoint.load_model_weights``; ``cfg``'s ``MODEL.WEIGHTS_*_PREFIXES``
    when given): any other missing, unexpected or mis-shaped tensor is a one-line error."""
    prefixes = weights_prefixes(cfg) if cfg is not None else {}
    return load_model_weights(model, path, **prefixes)


def build_sam2(cfg, apply_postprocessing: bool = False, binarize_mask_from_pts: bool = False) -> SAM2Base:
    """The SAM 2 model of ``MODEL.SAM2`` on ``MODEL.DEVICE``, eval mode, ``MODEL.WEIGHTS``
    loaded when set. apply_postprocessing: dynamic multimask via stability (delta 0.05,
    threshold 0.98), as the official builders; binarize_mask_from_pts: click masks enter the
    memory binarized, as the official video predictor."""
    cfg = cfg.clone()
    cfg.defrost()
    if apply_postprocessing:
        cfg.MODEL.SAM2.MASK_DECODER.DYNAMIC_MULTIMASK_VIA_STABILITY = True
        cfg.MODEL.SAM2.MASK_DECODER.DYNAMIC_MULTIMASK_STABILITY_DELTA = 0.05
        cfg.MODEL.SAM2.MASK_DECODER.DYNAMIC_MULTIMASK_STABILITY_THRESH = 0.98
    if binarize_mask_from_pts:
        cfg.MODEL.SAM2.BINARIZE_MASK_FROM_PTS_FOR_MEM_ENC = True
    model = SAM2Base(**sam2_base_kwargs(cfg))
    if cfg.MODEL.WEIGHTS:
        load_sam2_weights(model, cfg.MODEL.WEIGHTS, cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE)).eval()


def build_video_predictor(cfg) -> VideoPredictor:
    """The official ``SAM2VideoPredictor`` calls on ``build_sam2(cfg)`` (``MODEL.SAM2.PREDICTOR``)."""
    p = cfg.MODEL.SAM2.PREDICTOR
    post = p.APPLY_POSTPROCESSING
    model = build_sam2(cfg, apply_postprocessing=post, binarize_mask_from_pts=post)
    return VideoPredictor(
        model,
        fill_hole_area=p.FILL_HOLE_AREA if post else 0,
        non_overlap_masks=p.NON_OVERLAP_MASKS,
        clear_non_cond_mem_around_input=p.CLEAR_NON_COND_MEM_AROUND_INPUT,
        add_all_frames_to_correct_as_cond=p.ADD_ALL_FRAMES_TO_CORRECT_AS_COND,
    )


def build_image_predictor(cfg) -> ImagePredictor:
    """The official ``SAM2ImagePredictor`` calls on ``build_sam2(cfg)`` (dynamic multimask via
    stability with ``MODEL.SAM2.PREDICTOR.APPLY_POSTPROCESSING``, as the official ``build_sam2``)."""
    return ImagePredictor(build_sam2(cfg, apply_postprocessing=cfg.MODEL.SAM2.PREDICTOR.APPLY_POSTPROCESSING))
