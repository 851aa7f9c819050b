"""Config of find batches (``INPUT.FIND``): how an instance dataset becomes finds, one image
plus one concept prompt each."""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_find_config"]


@register_config_addition
def add_find_config(cfg) -> None:
    """Add ``INPUT.FIND`` with its defaults."""
    f = cfg.INPUT.FIND = CN()
    # Size K of the concept vocabulary: a find's concept is a category id in [0, K).
    # 0: the number of categories (thing_classes) of the datasets, category 0 of a Roboflow
    # export included
    f.NUM_CONCEPTS = 0
    # Absent concepts sampled per training image as presence negatives (-1: every absent one)
    f.NUM_NEGATIVES = 2
    # Present concepts kept per training image (-1: all); a random subset when fewer
    f.MAX_POSITIVES = -1
    # Absent concepts per test image (-1: every absent one, so every (image, concept) pair is
    # a find and presence accuracy covers all of them)
    f.TEST_NUM_NEGATIVES = -1
    # Whether a find's annotations list every instance of its concept (SAM 3's is_exhaustive)
    f.IS_EXHAUSTIVE = True
    # Training finds with more objects than this are dropped whole, as SAM 3's
    # FilterFindQueriesWithTooManyOut (max_ann_per_img 200) does; -1: no cap. Test finds keep all.
    f.MAX_OBJECTS_PER_FIND = 200
