"""Config of video clips (``INPUT.VIDEO``) and of the built-in ``shapes_video`` data
(``DATASETS.SHAPES_VIDEO``)."""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_video_data_config"]


@register_config_addition
def add_video_data_config(cfg) -> None:
    """Add ``INPUT.VIDEO`` and ``DATASETS.SHAPES_VIDEO`` with their defaults."""
    # Video clips (segtrain.data.video; SAM 2.1 fine-tuning values): frames and objects per clip
    cfg.INPUT.VIDEO = CN()
    cfg.INPUT.VIDEO.NUM_FRAMES = 8
    cfg.INPUT.VIDEO.MAX_OBJECTS = 3
    # Training clips take every k-th frame, k uniform in [1, MAX_FRAME_STRIDE] (1 = consecutive)
    cfg.INPUT.VIDEO.MAX_FRAME_STRIDE = 1
    # Objects of a clip: "first_frame" (visible in its first frame, as SAM 2) or "any_frame"
    cfg.INPUT.VIDEO.OBJECT_SAMPLING = "first_frame"
    # Pad every clip to MAX_OBJECTS objects (empty masks, valid=False) for a fixed batch shape
    cfg.INPUT.VIDEO.PAD_OBJECTS = False
    # Frames are resized to IMAGE_SIZE x IMAGE_SIZE (square, as SAM 2), the same way for a whole clip
    cfg.INPUT.VIDEO.IMAGE_SIZE = 128
    # Chance that a training clip runs backwards in time (SAM 2's reverse_time_prob)
    cfg.INPUT.VIDEO.REVERSE_TIME_PROB = 0.0
    # "horizontal", "vertical" or "none"; drawn once per clip
    cfg.INPUT.VIDEO.RANDOM_FLIP = "horizontal"
    # Random rotation and x-shear about the centre, the same for the whole clip, before the resize
    # (SAM 2's RandomAffine; the MOSE fine-tuning: 25 / 20 degrees, bilinear). When an object of
    # the first frame leaves it, the affine is drawn again NUM_TENTATIVES - 1 times, then skipped.
    cfg.INPUT.VIDEO.AFFINE = CN()
    cfg.INPUT.VIDEO.AFFINE.ENABLED = False
    cfg.INPUT.VIDEO.AFFINE.DEGREES = 25.0
    cfg.INPUT.VIDEO.AFFINE.SHEAR = 20.0
    # "bilinear" or "bicubic" (images; masks are nearest)
    cfg.INPUT.VIDEO.AFFINE.INTERPOLATION = "bilinear"
    cfg.INPUT.VIDEO.AFFINE.NUM_TENTATIVES = 1
    # After INPUT.COLOR_JITTER (drawn once per clip): grey frames with this chance (whole clip),
    # then a colour jitter drawn for every frame: [brightness, contrast, saturation] (0 = off;
    # the MOSE fine-tuning: [0.1, 0.05, 0.05] after a clip-wide [0.1, 0.03, 0.03] and grey 0.05)
    cfg.INPUT.VIDEO.GRAYSCALE_PROB = 0.0
    cfg.INPUT.VIDEO.PER_FRAME_COLOR_JITTER = [0.0, 0.0, 0.0]
    # Chance that a training batch is made of images (one-frame clips) when DATASETS.TRAIN mixes
    # image and video datasets; negative = the share of images among all items
    cfg.INPUT.VIDEO.IMAGE_BATCH_PROB = -1.0
    # Built-in shapes_video sizes (YouTube-VIS-style videos generated on first use)
    cfg.DATASETS.SHAPES_VIDEO = CN()
    cfg.DATASETS.SHAPES_VIDEO.NUM_TRAIN = 300
    cfg.DATASETS.SHAPES_VIDEO.NUM_VAL = 30
    cfg.DATASETS.SHAPES_VIDEO.NUM_FRAMES = 12
    cfg.DATASETS.SHAPES_VIDEO.IMAGE_SIZE = 128
