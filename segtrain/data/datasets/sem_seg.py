"""Semantic segmentation folders (an image folder and a label-PNG folder paired by file stem,
as ADE20K and Cityscapes are laid out) -> dataset dicts, and ``register_sem_seg``."""

import logging
import os
from typing import Any, Dict, List

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = ["load_sem_seg", "register_sem_seg"]

logger = logging.getLogger(__name__)


def _files_by_stem(root: str, ext: str, what: str) -> Dict[str, str]:
    if not os.path.isdir(root):
        raise DatasetError(f"{what} folder not found: {root!r}")
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith("." + ext):
                rel = os.path.relpath(os.path.join(dirpath, n), root)
                out[rel[: -len(ext) - 1]] = os.path.join(dirpath, n)
    if not out:
        raise DatasetError(f"{what} folder {root!r} has no .{ext} files")
    return out


def load_sem_seg(gt_root: str, image_root: str, gt_ext: str = "png", image_ext: str = "jpg") -> List[Dict[str, Any]]:
    """One dict per image: ``file_name``, ``image_id`` (the path below ``image_root`` without
    extension) and ``sem_seg_file_name`` (the label PNG of the same relative stem under
    ``gt_root``: one channel, values are contiguous class ids or ``ignore_label``). An image
    without a label file, or a label file without an image, is a ``DatasetError`` naming it."""
    images = _files_by_stem(image_root, image_ext, "image")
    labels = _files_by_stem(gt_root, gt_ext, "label")
    for a, b, a_root, b_root in ((images, labels, image_root, gt_root), (labels, images, gt_root, image_root)):
        missing = sorted(set(a) - set(b))
        if missing:
            raise DatasetError(
                f"{a[missing[0]]} has no counterpart under {b_root!r} ({len(missing)} files of {a_root!r} are unpaired)"
            )
    dicts = [{"file_name": images[k], "image_id": k, "sem_seg_file_name": labels[k]} for k in sorted(images)]
    logger.info("Loaded %d images with semantic labels from %s", len(dicts), image_root)
    return dicts


def register_sem_seg(
    name: str, metadata: Dict[str, Any], image_root: str, gt_root: str, gt_ext: str = "png", image_ext: str = "jpg"
) -> None:
    """Register a semantic segmentation folder pair as dataset ``name``. ``metadata`` must give
    ``stuff_classes`` (the class names, index = label value); it adds to ``image_root``,
    ``sem_seg_root``, ``ignore_label=255`` and ``evaluator_type="sem_seg"``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_sem_seg: name must be a non-empty str, got {name!r}")
    if not (metadata or {}).get("stuff_classes"):
        raise DatasetError(
            f"register_sem_seg({name!r}): metadata needs 'stuff_classes' (the class names, in label order)"
        )
    DatasetCatalog.register(name, lambda: load_sem_seg(gt_root, image_root, gt_ext, image_ext))
    meta = {"image_root": image_root, "sem_seg_root": gt_root, "ignore_label": 255, "evaluator_type": "sem_seg"}
    meta.update(metadata)
    MetadataCatalog.get(name).set(**meta)
