"""Mask2Former family config (``MODEL.SEM_SEG_HEAD``, ``MODEL.MASK_FORMER``)."""
from .config import CfgNode as CN

__all__ = ["add_maskformer_config"]


def add_maskformer_config(cfg) -> None:
    """Add the Mask2Former architecture node (filled by the Mask2Former model)."""
    cfg.MODEL.SEM_SEG_HEAD = CN()
    cfg.MODEL.MASK_FORMER = CN()
