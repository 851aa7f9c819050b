"""Drawing dataset dicts (their annotations, panoptic and label maps) with the ``Visualizer``."""

from typing import Any, Dict

import cv2
import numpy as np

from segtrain.structures.masks import BoxMode, segmentation_to_bitmask
from segtrain.utils.visualizer import Visualizer

from .detection_utils import read_panoptic_ids

__all__ = ["draw_dataset_dict"]


def draw_dataset_dict(vis: Visualizer, d: Dict[str, Any]) -> np.ndarray:
    """Draw on ``vis`` a dataset dict's annotations (polygons or RLE, XYWH boxes, contiguous
    ``category_id``) and its ``sem_seg_file_name`` label map when it has one."""
    anns = [a for a in d.get("annotations", [])]
    if anns:
        masks, boxes, classes, labels = [], [], [], []
        has_masks = all(a.get("segmentation") for a in anns)
        for a in anns:
            if has_masks:
                masks.append(segmentation_to_bitmask(a["segmentation"], vis.height, vis.width))
            mode = a.get("bbox_mode", BoxMode.XYWH_ABS)
            boxes.append(BoxMode.convert(list(map(float, a["bbox"])), mode, BoxMode.XYXY_ABS))
            cls = int(a["category_id"])
            classes.append(cls)
            labels.append(vis.class_name(cls) + (" (crowd)" if a.get("iscrowd", 0) else ""))
        vis.overlay_instances(
            masks=np.stack(masks) if has_masks else None, boxes=np.asarray(boxes), class_ids=classes, labels=labels
        )
    if d.get("pan_seg_file_name"):
        vis.draw_panoptic_seg(read_panoptic_ids(d["pan_seg_file_name"]), d.get("segments_info", []))
    path = d.get("sem_seg_file_name")
    if path:
        sem = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if sem is None:
            raise OSError(f"cannot read sem_seg file {path!r}")
        vis.draw_sem_seg(sem)
    return vis.get_output()
