"""Criterion and matcher config nodes; defaults are the official values of docs/losses.md.

Each loss weight dictionary is a config entry (``WEIGHT_DICT``) whose keys are the loss
keys themselves, so a YAML or command-line override names exactly the key it weights:
``MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_ce 2.0``.
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_criterion_config"]


@register_config_addition
def add_criterion_config(cfg) -> None:
    # ------------------------------------------------------------------ matchers
    cfg.MODEL.MATCHER = CN()
    # MATCHER registry name of the (one-to-one) matcher handed to the criterion
    cfg.MODEL.MATCHER.NAME = "HungarianMatcher"

    # Mask2Former: costs 2/5/5, 12544 shared points per image
    cfg.MODEL.MATCHER.HUNGARIAN = CN()
    cfg.MODEL.MATCHER.HUNGARIAN.COST_CLASS = 2.0
    cfg.MODEL.MATCHER.HUNGARIAN.COST_MASK = 5.0
    cfg.MODEL.MATCHER.HUNGARIAN.COST_DICE = 5.0
    cfg.MODEL.MATCHER.HUNGARIAN.NUM_POINTS = 12544

    # SAM 3 one-to-one matcher: focal class cost 2, L1 box 5, GIoU 2
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN = CN()
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.COST_CLASS = 2.0
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.COST_BBOX = 5.0
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.COST_GIOU = 2.0
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.FOCAL = True
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.ALPHA = 0.25
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.GAMMA = 2.0
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.STABLE = False
    cfg.MODEL.MATCHER.BINARY_HUNGARIAN.REMOVE_SAMPLES_WITH_0_GT = True

    # SAM 3 one-to-many matcher
    cfg.MODEL.MATCHER.ONE_TO_MANY = CN()
    cfg.MODEL.MATCHER.ONE_TO_MANY.ALPHA = 0.3
    cfg.MODEL.MATCHER.ONE_TO_MANY.THRESHOLD = 0.4
    cfg.MODEL.MATCHER.ONE_TO_MANY.TOPK = 4

    # ------------------------------------------------------------------ criteria
    cfg.MODEL.CRITERION = CN()
    # CRITERION registry name: SetCriterion, Sam3LossWrapper, MultiStepMultiMasksAndIous, ...
    cfg.MODEL.CRITERION.NAME = "SetCriterion"

    # Mask2Former SetCriterion (R50 COCO): class 2, mask 5, dice 5, eos 0.1, 112*112 points
    cfg.MODEL.CRITERION.SET_CRITERION = CN()
    cfg.MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT = CN({"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    cfg.MODEL.CRITERION.SET_CRITERION.EOS_COEF = 0.1
    cfg.MODEL.CRITERION.SET_CRITERION.LOSSES = ["labels", "masks"]
    cfg.MODEL.CRITERION.SET_CRITERION.NUM_POINTS = 12544
    cfg.MODEL.CRITERION.SET_CRITERION.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.CRITERION.SET_CRITERION.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Loss on every aux_outputs entry (keys loss_*_0 .. loss_*_{L-1}, same weights)
    cfg.MODEL.CRITERION.SET_CRITERION.DEEP_SUPERVISION = True

    # SAM 3 Sam3LossWrapper with Boxes / IABCEMdetr / Masks (official fine-tuning values)
    cfg.MODEL.CRITERION.SAM3 = CN()
    # SAM3 loss pieces, by registry name, in the order they run
    cfg.MODEL.CRITERION.SAM3.LOSS_FNS = ["Boxes", "IABCEMdetr", "Masks"]
    # "global" (averaged over processes; local value in one process), "local" or "none"
    cfg.MODEL.CRITERION.SAM3.NORMALIZATION = "global"
    cfg.MODEL.CRITERION.SAM3.O2M_MATCHER_NAME = "BinaryOneToManyMatcher"
    cfg.MODEL.CRITERION.SAM3.O2M_WEIGHT = 2.0
    cfg.MODEL.CRITERION.SAM3.USE_O2M_MATCHER_ON_O2M_AUX = False
    cfg.MODEL.CRITERION.SAM3.NORMALIZE_BY_VALID_OBJECT_NUM = False
    cfg.MODEL.CRITERION.SAM3.NORMALIZE_BY_STAGE_NUM = False
    cfg.MODEL.CRITERION.SAM3.SCALE_BY_FIND_BATCH_SIZE = True

    cfg.MODEL.CRITERION.SAM3.BOXES = CN()
    cfg.MODEL.CRITERION.SAM3.BOXES.WEIGHT_DICT = CN({"loss_bbox": 5.0, "loss_giou": 2.0})
    cfg.MODEL.CRITERION.SAM3.BOXES.COMPUTE_AUX = True

    cfg.MODEL.CRITERION.SAM3.IABCE = CN()
    cfg.MODEL.CRITERION.SAM3.IABCE.WEIGHT_DICT = CN({"loss_ce": 20.0, "presence_loss": 20.0})
    cfg.MODEL.CRITERION.SAM3.IABCE.COMPUTE_AUX = True
    cfg.MODEL.CRITERION.SAM3.IABCE.POS_WEIGHT = 10.0
    cfg.MODEL.CRITERION.SAM3.IABCE.ALPHA = 0.25
    cfg.MODEL.CRITERION.SAM3.IABCE.GAMMA = 2.0
    cfg.MODEL.CRITERION.SAM3.IABCE.WEAK_LOSS = False
    # 0 = None (no padding normalization)
    cfg.MODEL.CRITERION.SAM3.IABCE.PAD_N_QUERIES = 200
    cfg.MODEL.CRITERION.SAM3.IABCE.PAD_SCALE_POS = 1.0
    cfg.MODEL.CRITERION.SAM3.IABCE.USE_PRESENCE = True
    cfg.MODEL.CRITERION.SAM3.IABCE.PRESENCE_ALPHA = 0.5
    cfg.MODEL.CRITERION.SAM3.IABCE.PRESENCE_GAMMA = 0.0
    cfg.MODEL.CRITERION.SAM3.IABCE.POS_FOCAL = False

    cfg.MODEL.CRITERION.SAM3.MASKS = CN()
    cfg.MODEL.CRITERION.SAM3.MASKS.WEIGHT_DICT = CN({"loss_mask": 200.0, "loss_dice": 10.0})
    cfg.MODEL.CRITERION.SAM3.MASKS.COMPUTE_AUX = False
    cfg.MODEL.CRITERION.SAM3.MASKS.FOCAL_ALPHA = 0.25
    cfg.MODEL.CRITERION.SAM3.MASKS.FOCAL_GAMMA = 2.0
    # 0 = None: full-resolution losses (predictions upsampled to the GT size)
    cfg.MODEL.CRITERION.SAM3.MASKS.NUM_SAMPLE_POINTS = 0
    cfg.MODEL.CRITERION.SAM3.MASKS.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.CRITERION.SAM3.MASKS.IMPORTANCE_SAMPLE_RATIO = 0.75

    # SAM 2.1 MultiStepMultiMasksAndIous (official fine-tuning values)
    cfg.MODEL.CRITERION.MULTISTEP = CN()
    cfg.MODEL.CRITERION.MULTISTEP.WEIGHT_DICT = CN(
        {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    )
    cfg.MODEL.CRITERION.MULTISTEP.FOCAL_ALPHA = 0.25
    cfg.MODEL.CRITERION.MULTISTEP.FOCAL_GAMMA = 2.0
    cfg.MODEL.CRITERION.MULTISTEP.SUPERVISE_ALL_IOU = True
    cfg.MODEL.CRITERION.MULTISTEP.IOU_USE_L1_LOSS = True
    cfg.MODEL.CRITERION.MULTISTEP.PRED_OBJ_SCORES = True
    cfg.MODEL.CRITERION.MULTISTEP.FOCAL_GAMMA_OBJ_SCORE = 0.0
    cfg.MODEL.CRITERION.MULTISTEP.FOCAL_ALPHA_OBJ_SCORE = -1.0
