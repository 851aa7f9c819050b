"""segtrain: a Detectron2-style codebase for training segmentation models in PyTorch."""

__version__ = "0.1.0"
