"""Conversion to the COCO format: one image's predicted ``Instances`` -> COCO result dicts
(``instances_to_coco_json``) and Detectron2-format dataset dicts -> a COCO instances dict
(``dataset_dicts_to_coco``; a panoptic image's thing segments are its instances)."""

from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch

from segtrain.data.detection_utils import read_panoptic_ids
from segtrain.utils.errors import ConfigError, DatasetError

__all__ = ["instances_to_coco_json", "dataset_dicts_to_coco"]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "tensor"):  # a Boxes-like wrapper
        return _to_numpy(x.tensor)
    return np.asarray(x)


def _has(instances: Any, name: str) -> bool:
    return instances.has(name) if hasattr(instances, "has") else hasattr(instances, name)


def instances_to_coco_json(
    instances: Any, image_id: int, contiguous_to_dataset_id: Optional[Dict[int, int]] = None, *, dataset_name: str = ""
) -> List[Dict[str, Any]]:
    """COCO result dicts for one image's predictions.

    instances: ``Instances`` with ``pred_boxes`` [N, 4] XYXY absolute, ``scores`` [N],
        ``pred_classes`` [N] contiguous ids, optional ``pred_masks`` bool [N, H, W].
        Boxes are taken from the masks when ``pred_boxes`` is absent.
    contiguous_to_dataset_id: contiguous class -> json category id (identity when None).
    Returns ``[{"image_id", "category_id", "bbox" (XYWH), "score", "segmentation" (RLE)?}]``.
    """
    num = len(instances)
    if num == 0:
        return []
    scores = _to_numpy(instances.scores).astype(np.float64).reshape(-1)
    classes = _to_numpy(instances.pred_classes).astype(np.int64).reshape(-1)
    rles = None
    if _has(instances, "pred_masks"):
        masks = _to_numpy(instances.pred_masks)
        if masks.dtype != np.bool_:
            masks = masks > 0.5
        # pycocotools wants a Fortran-ordered uint8 [H, W, N] array
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")  # bytes are not JSON
    if _has(instances, "pred_boxes"):
        boxes = _to_numpy(instances.pred_boxes).astype(np.float64).reshape(-1, 4).copy()
        boxes[:, 2:] -= boxes[:, :2]
    elif rles is not None:
        boxes = mask_util.toBbox(rles).astype(np.float64).reshape(-1, 4)
    else:
        raise ValueError(f"instances of image {image_id} have neither pred_boxes nor pred_masks")

    results = []
    for i in range(num):
        cls = int(classes[i])
        if contiguous_to_dataset_id is not None:
            if cls not in contiguous_to_dataset_id:
                raise ConfigError(
                    f"COCOEvaluator({dataset_name}): predicted class {cls} on image {image_id} is not a class of the "
                    f"dataset (contiguous ids {min(contiguous_to_dataset_id)}..{max(contiguous_to_dataset_id)}); "
                    "does the model's number of classes match the dataset?"
                )
            cat = contiguous_to_dataset_id[cls]
        else:
            cat = cls
        r = {
            "image_id": int(image_id),
            "category_id": cat,
            "bbox": [float(v) for v in boxes[i]],
            "score": float(scores[i]),
        }
        if rles is not None:
            r["segmentation"] = rles[i]
        results.append(r)
    return results


def _is_xyxy(mode: Any) -> bool:
    name = getattr(mode, "name", None)
    if name is not None:
        return name == "XYXY_ABS"
    return mode == 0  # Detectron2's BoxMode numbering: XYXY_ABS = 0, XYWH_ABS = 1


def dataset_dicts_to_coco(dataset_dicts: List[Dict[str, Any]], metadata: Any) -> Dict[str, Any]:
    """A COCO instances dict (images, annotations, categories) from Detectron2-format dicts whose
    ``category_id`` is contiguous; ids are mapped back with ``thing_dataset_id_to_contiguous_id``."""
    # contiguous ids index stuff_classes on panoptic datasets (things and stuff), else thing_classes
    names = list(getattr(metadata, "stuff_classes", None) or getattr(metadata, "thing_classes", None) or [])
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
    contiguous_to_id = {int(v): int(k) for k, v in mapping.items()} if mapping else {i: i for i in range(len(names))}
    categories = [
        {"id": cid, "name": names[c] if c < len(names) else str(cid)} for c, cid in sorted(contiguous_to_id.items())
    ]
    images, annotations = [], []
    for d in dataset_dicts:
        h, w = int(d["height"]), int(d["width"])
        images.append({"id": int(d["image_id"]), "width": w, "height": h, "file_name": d.get("file_name", "")})
        anns = d.get("annotations")
        if anns is None and d.get("pan_seg_file_name"):
            anns = _panoptic_thing_annotations(d, set(contiguous_to_id))
        for ann in anns or []:
            cls = int(ann["category_id"])
            if cls not in contiguous_to_id:
                raise DatasetError(f"image {d['image_id']}: category_id {cls} is not a class of the dataset metadata")
            bbox = [float(v) for v in ann["bbox"]]
            if _is_xyxy(ann.get("bbox_mode", 1)):
                bbox = [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]
            out = {
                "id": len(annotations) + 1,
                "image_id": int(d["image_id"]),
                "bbox": bbox,
                "category_id": contiguous_to_id[cls],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            seg = ann.get("segmentation")
            if seg:
                if isinstance(seg, dict):
                    rle = mask_util.frPyObjects(seg, h, w) if isinstance(seg.get("counts"), list) else dict(seg)
                    if isinstance(rle["counts"], bytes):
                        rle["counts"] = rle["counts"].decode("utf-8")
                    out["segmentation"] = rle
                    out["area"] = float(mask_util.area(rle))
                else:
                    out["segmentation"] = [list(map(float, p)) for p in seg]
                    rles = mask_util.frPyObjects(out["segmentation"], h, w)
                    out["area"] = float(mask_util.area(mask_util.merge(rles)))
            else:
                out["area"] = bbox[2] * bbox[3]
            annotations.append(out)
    if not categories:  # no class names in the metadata: take the ids that occur
        categories = [{"id": c, "name": str(c)} for c in sorted({a["category_id"] for a in annotations})]
    return {
        "info": {"description": "converted by segtrain"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
        "licenses": [],
    }


def _panoptic_thing_annotations(d: Dict[str, Any], thing_ids: set) -> List[Dict[str, Any]]:
    """Instance annotations (RLE, XYWH box) of the thing segments of a panoptic dataset dict."""
    ids = read_panoptic_ids(d["pan_seg_file_name"])
    out = []
    for seg in d.get("segments_info", []):
        if int(seg["category_id"]) not in thing_ids:
            continue
        mask = ids == int(seg["id"])
        if not mask.any():
            continue
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append(
            {
                "category_id": int(seg["category_id"]),
                "iscrowd": int(seg.get("iscrowd", 0)),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "bbox_mode": 1,
                "segmentation": rle,
            }
        )
    return out
