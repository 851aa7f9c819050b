"""Draw instance masks, contours, boxes and labels (or semantic label maps) on an RGB image
with OpenCV, and save the result as PNG."""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

__all__ = ["Visualizer", "PALETTE", "class_color"]

logger = logging.getLogger(__name__)

# Fixed, well separated RGB colours; class i uses PALETTE[i % len(PALETTE)] when the metadata
# has no thing_colors.
PALETTE: List[Tuple[int, int, int]] = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
]

_ArrayLike = Union[np.ndarray, torch.Tensor]


def class_color(class_id: int, metadata: Any = None) -> Tuple[int, int, int]:
    """RGB colour of a contiguous class id: ``metadata.thing_colors`` if given, else the palette."""
    colors = getattr(metadata, "thing_colors", None) if metadata is not None else None
    if colors and 0 <= class_id < len(colors):
        return tuple(int(c) for c in colors[class_id])[:3]
    return PALETTE[int(class_id) % len(PALETTE)]


def _np(x: _ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "tensor"):
        return _np(x.tensor)
    return np.asarray(x)


class Visualizer:
    """Draws on a copy of one image; every ``draw_*`` returns the image drawn so far.

    img: RGB uint8 [H, W, 3] (a [H, W] grey image or a torch [3, H, W] tensor is converted).
    metadata: optional, for ``thing_classes`` / ``stuff_classes`` (labels) and ``thing_colors``.
    alpha: opacity of the mask fill in [0, 1].
    """

    def __init__(self, img: _ArrayLike, metadata: Any = None, *, alpha: float = 0.5):
        img = _np(img)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
            img = img.transpose(1, 2, 0)  # CHW tensor layout
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise ValueError(f"Visualizer expects an RGB image [H, W, 3], got shape {tuple(img.shape)}")
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        self.metadata = metadata
        self.alpha = float(alpha)
        self._img = np.ascontiguousarray(img.copy())
        h, w = self._img.shape[:2]
        self._thickness = max(1, int(round(min(h, w) / 300)))
        self._font_scale = max(0.35, min(h, w) / 700)

    @property
    def height(self) -> int:
        return self._img.shape[0]

    @property
    def width(self) -> int:
        return self._img.shape[1]

    def get_output(self) -> np.ndarray:
        """The drawn image, RGB uint8 [H, W, 3]."""
        return self._img.copy()

    def save(self, path: str) -> None:
        """Write the drawn image as PNG (OpenCV wants BGR)."""
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        if not cv2.imwrite(path, cv2.cvtColor(self._img, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write image {path!r}")

    def class_name(self, class_id: int) -> str:
        """The metadata name of a contiguous class id (the id itself when unknown): from
        ``stuff_classes`` when the metadata has them (panoptic and semantic datasets, whose
        contiguous ids run over every class), else ``thing_classes``."""
        meta = self.metadata
        names = (
            (getattr(meta, "stuff_classes", None) or getattr(meta, "thing_classes", None)) if meta is not None else None
        )
        if names and 0 <= class_id < len(names):
            return str(names[class_id])
        return str(class_id)

    # ------------------------------------------------------------------ primitives
    def overlay_instances(
        self,
        *,
        masks: Optional[_ArrayLike] = None,
        boxes: Optional[_ArrayLike] = None,
        class_ids: Optional[Sequence[int]] = None,
        labels: Optional[Sequence[str]] = None,
        colors: Optional[Sequence[Tuple[int, int, int]]] = None,
    ) -> np.ndarray:
        """Draw N objects: filled, alpha-blended masks with contours, boxes and text labels.

        masks: bool [N, H, W]; boxes: [N, 4] XYXY absolute; class_ids: [N] contiguous ids (for
        colours); labels: N strings; colors: N RGB tuples (override the class colours).
        Larger objects are drawn first so that small ones stay visible.
        """
        n = None
        for x in (masks, boxes, class_ids, labels):
            if x is not None:
                n = len(x)
                break
        if not n:
            return self.get_output()
        masks_np = _np(masks).astype(bool) if masks is not None else None
        if masks_np is not None and masks_np.shape[1:] != self._img.shape[:2]:
            raise ValueError(
                f"masks are {masks_np.shape[1]}x{masks_np.shape[2]} but the image is {self.height}x{self.width}"
            )
        boxes_np = _np(boxes).astype(np.float64).reshape(-1, 4) if boxes is not None else None
        ids = [int(c) for c in _np(class_ids).reshape(-1)] if class_ids is not None else [None] * n
        if colors is None:
            colors = [
                class_color(c, self.metadata) if c is not None else PALETTE[i % len(PALETTE)] for i, c in enumerate(ids)
            ]
        if masks_np is not None:
            areas = masks_np.reshape(n, -1).sum(1)
        elif boxes_np is not None:
            areas = (boxes_np[:, 2] - boxes_np[:, 0]) * (boxes_np[:, 3] - boxes_np[:, 1])
        else:
            areas = np.zeros(n)
        order = np.argsort(-areas, kind="stable")

        if masks_np is not None:
            for i in order:
                self._blend_mask(masks_np[i], colors[i])
            for i in order:
                self._draw_contour(masks_np[i], colors[i])
        if boxes_np is not None:
            for i in order:
                x0, y0, x1, y1 = (int(round(v)) for v in boxes_np[i])
                cv2.rectangle(self._img, (x0, y0), (x1, y1), colors[i], self._thickness, cv2.LINE_AA)
        if labels is not None:
            for i in order:
                anchor = self._label_anchor(i, masks_np, boxes_np)
                if anchor is not None and labels[i]:
                    self._draw_text(labels[i], anchor, colors[i])
        return self.get_output()

    def _blend_mask(self, mask: np.ndarray, color: Tuple[int, int, int]) -> None:
        if not mask.any():
            return
        region = self._img[mask].astype(np.float32)
        self._img[mask] = (
            (region * (1 - self.alpha) + np.asarray(color, np.float32) * self.alpha).round().astype(np.uint8)
        )

    def _draw_contour(self, mask: np.ndarray, color: Tuple[int, int, int]) -> None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        edge = tuple(int(c * 0.6) for c in color)  # darker outline separates touching objects
        cv2.drawContours(self._img, contours, -1, edge, self._thickness, cv2.LINE_AA)

    def _label_anchor(self, i: int, masks: Optional[np.ndarray], boxes: Optional[np.ndarray]):
        if boxes is not None:
            return int(boxes[i, 0]), int(boxes[i, 1])
        if masks is not None and masks[i].any():
            ys, xs = np.nonzero(masks[i])
            return int(xs.mean()), int(ys.mean())
        return None

    def _draw_text(self, text: str, anchor: Tuple[int, int], color: Tuple[int, int, int]) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), base = cv2.getTextSize(text, font, self._font_scale, 1)
        x = int(np.clip(anchor[0], 0, max(self.width - tw - 2, 0)))
        y = int(np.clip(anchor[1] - 2, th + base, self.height - 1))  # above the box, inside the image
        bg = tuple(int(c * 0.5) for c in color)
        cv2.rectangle(self._img, (x, y - th - base), (x + tw + 2, y + 1), bg, -1)
        cv2.putText(self._img, text, (x + 1, y - base + 1), font, self._font_scale, (255, 255, 255), 1, cv2.LINE_AA)

    # ------------------------------------------------------------------ high level
    def draw_instance_predictions(self, instances: Any, score_threshold: float = 0.5) -> np.ndarray:
        """Draw predictions with score >= ``score_threshold``, labelled "class 93%".

        instances: ``Instances`` with ``scores`` [N] and some of ``pred_masks`` bool [N, H, W],
        ``pred_boxes`` [N, 4] XYXY, ``pred_classes`` [N]; sized like this image.
        """
        has = instances.has if hasattr(instances, "has") else (lambda k: hasattr(instances, k))
        if len(instances) == 0:
            return self.get_output()
        scores = _np(instances.scores).reshape(-1) if has("scores") else np.ones(len(instances))
        keep = scores >= score_threshold
        classes = _np(instances.pred_classes).reshape(-1)[keep] if has("pred_classes") else None
        masks = _np(instances.pred_masks)[keep] if has("pred_masks") else None
        boxes = _np(instances.pred_boxes).reshape(-1, 4)[keep] if has("pred_boxes") else None
        kept_scores = scores[keep]
        labels = []
        for j in range(int(keep.sum())):
            name = self.class_name(int(classes[j])) if classes is not None else "object"
            labels.append(f"{name} {kept_scores[j] * 100:.0f}%")
        return self.overlay_instances(masks=masks, boxes=boxes, class_ids=classes, labels=labels)

    def draw_panoptic_seg(self, panoptic_seg: _ArrayLike, segments_info: Sequence[Dict[str, Any]]) -> np.ndarray:
        """Draw every segment of a panoptic map (segment ids [H, W], 0 = void) with its
        class colour and name; ``segments_info``: ``{"id", "category_id"}`` (``iscrowd``
        segments are labelled "(crowd)")."""
        seg = _np(panoptic_seg)
        drawn = [(s, seg == int(s["id"])) for s in segments_info]
        drawn = [(s, m) for s, m in drawn if m.any()]
        if not drawn:
            return self.get_output()
        segments = [s for s, _ in drawn]
        masks = np.stack([m for _, m in drawn])
        classes = [int(s["category_id"]) for s in segments]
        labels = [self.class_name(c) + (" (crowd)" if s.get("iscrowd", 0) else "") for c, s in zip(classes, segments)]
        return self.overlay_instances(masks=masks, class_ids=classes, labels=labels)

    def draw_sem_seg(self, sem_seg: _ArrayLike, *, ignore_label: int = 255) -> np.ndarray:
        """Blend a label map ([H, W] ints, or [K, H, W] scores) with one colour per class and
        write each class name at the mean position of its pixels."""
        sem = _np(sem_seg)
        if sem.ndim == 3:
            sem = sem.argmax(0)
        for cls in np.unique(sem):
            if int(cls) == ignore_label:
                continue
            m = sem == cls
            color = class_color(int(cls), self.metadata)
            self._blend_mask(m, color)
            self._draw_contour(m, color)
            ys, xs = np.nonzero(m)
            self._draw_text(self.class_name(int(cls)), (int(xs.mean()), int(ys.mean())), color)
        return self.get_output()
