"""Deterministic transforms: the parameters are fixed, so one ``Transform`` applies the
same change to an image, its masks and its polygon coordinates.

Images are HxWxC uint8 (or HxW); segmentations are HxW bool/uint8 masks; coordinates are
[P, 2] float (x, y) in the continuous pixel-edge convention (pixel j spans [j, j + 1]).
"""

import logging
from typing import Callable, List, Optional

import cv2
import numpy as np

__all__ = [
    "Transform",
    "TransformList",
    "NoOpTransform",
    "ResizeTransform",
    "HFlipTransform",
    "VFlipTransform",
    "CropTransform",
    "PadTransform",
    "ColorTransform",
    "AffineTransform",
]

logger = logging.getLogger(__name__)


class Transform:
    """Base class: override ``apply_image``; geometric transforms also override
    ``apply_segmentation`` and ``apply_coords`` (the defaults leave them unchanged)."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """HxW mask -> transformed mask (nearest-neighbour, never blended)."""
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """[P, 2] (x, y) -> [P, 2]."""
        return coords

    def apply_polygons(self, polygons: List[np.ndarray]) -> List[np.ndarray]:
        """Each flat ``[x0, y0, x1, y1, ...]`` polygon -> transformed flat float64 array."""
        return [self.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(-1) for p in polygons]

    def output_size(self, height: int, width: int):
        """(H, W) of the output for an input of (height, width)."""
        return height, width

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"


class NoOpTransform(Transform):
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img


class TransformList(Transform):
    """Transforms applied in order."""

    def __init__(self, transforms: List[Transform]):
        flat: List[Transform] = []
        for t in transforms:
            flat.extend(t.transforms if isinstance(t, TransformList) else [t])
        self.transforms = [t for t in flat if not isinstance(t, NoOpTransform)]

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            img = t.apply_image(img)
        return img

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            segmentation = t.apply_segmentation(segmentation)
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            coords = t.apply_coords(coords)
        return coords

    def output_size(self, height: int, width: int):
        for t in self.transforms:
            height, width = t.output_size(height, width)
        return height, width

    def __iter__(self):
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)


class ResizeTransform(Transform):
    """Resize (h, w) -> (new_h, new_w); bilinear for images, nearest for masks."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int = cv2.INTER_LINEAR):
        self.h, self.w, self.new_h, self.new_w, self.interp = int(h), int(w), int(new_h), int(new_w), interp

    def _check(self, arr: np.ndarray) -> None:
        if arr.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform for {(self.h, self.w)} got an array of size {arr.shape[:2]}")

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        self._check(img)
        if (self.new_h, self.new_w) == (self.h, self.w):
            return img
        # cv2 drops a channel axis of size 1; keep the input's rank
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=self.interp)
        return out.reshape(self.new_h, self.new_w, *img.shape[2:])

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        self._check(segmentation)
        if (self.new_h, self.new_w) == (self.h, self.w):
            return segmentation
        dtype = segmentation.dtype
        # OpenCV resizes uint8 / uint16 / int16 / float32 maps; bool masks go through uint8 and
        # other integer maps through float32 (exact below 2^24), so label and id maps keep their values
        if dtype in (np.uint8, np.uint16, np.int16, np.float32):
            src = segmentation
        elif dtype == np.dtype(bool):
            src = segmentation.astype(np.uint8)
        else:
            src = segmentation.astype(np.float32)
        out = cv2.resize(src, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)
        return out.astype(dtype, copy=False)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords

    def output_size(self, height: int, width: int):
        return self.new_h, self.new_w


class HFlipTransform(Transform):
    """Mirror left-right an image of the given width."""

    def __init__(self, width: int):
        self.width = int(width)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    apply_segmentation = apply_image

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] = self.width - coords[:, 0]
        return coords


class VFlipTransform(Transform):
    """Mirror top-bottom an image of the given height."""

    def __init__(self, height: int):
        self.height = int(height)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[::-1])

    apply_segmentation = apply_image

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 1] = self.height - coords[:, 1]
        return coords


class CropTransform(Transform):
    """Keep the window x in [x0, x0 + w), y in [y0, y0 + h)."""

    def __init__(self, x0: int, y0: int, w: int, h: int):
        self.x0, self.y0, self.w, self.h = int(x0), int(y0), int(w), int(h)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[self.y0 : self.y0 + self.h, self.x0 : self.x0 + self.w])

    apply_segmentation = apply_image

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] -= self.x0
        coords[:, 1] -= self.y0
        return coords

    def output_size(self, height: int, width: int):
        return min(self.h, height - self.y0), min(self.w, width - self.x0)


class PadTransform(Transform):
    """Pad ``pad_bottom`` rows and ``pad_right`` columns, and ``pad_top`` / ``pad_left`` before
    the content (images with ``pad_value``, masks with 0); coordinates move by
    (``pad_left``, ``pad_top``)."""

    def __init__(self, pad_bottom: int, pad_right: int, pad_value: float = 128.0, pad_top: int = 0, pad_left: int = 0):
        self.pad_bottom, self.pad_right, self.pad_value = int(pad_bottom), int(pad_right), pad_value
        self.pad_top, self.pad_left = int(pad_top), int(pad_left)
        if min(self.pad_bottom, self.pad_right, self.pad_top, self.pad_left) < 0:
            raise ValueError(f"PadTransform needs paddings >= 0, got {self!r}")

    def _pad(self, arr: np.ndarray, value: float) -> np.ndarray:
        if not (self.pad_bottom or self.pad_right or self.pad_top or self.pad_left):
            return arr
        widths = [(self.pad_top, self.pad_bottom), (self.pad_left, self.pad_right)] + [(0, 0)] * (arr.ndim - 2)
        return np.pad(arr, widths, mode="constant", constant_values=value)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._pad(img, self.pad_value)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._pad(segmentation, 0)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        if not (self.pad_top or self.pad_left):
            return coords
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[:, 0] += self.pad_left
        coords[:, 1] += self.pad_top
        return coords

    def output_size(self, height: int, width: int):
        return height + self.pad_top + self.pad_bottom, width + self.pad_left + self.pad_right


class ColorTransform(Transform):
    """A photometric change ``func(img) -> img``; masks and coordinates are unchanged."""

    def __init__(self, func: Callable[[np.ndarray], np.ndarray], name: Optional[str] = None):
        self._func = func
        self.name = name or getattr(func, "__name__", "color")

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._func(img)


class AffineTransform(Transform):
    """An affine map about the image centre that keeps the image size: ``out = A (p - c) + c``
    with ``c = (w / 2, h / 2)`` in pixel-edge coordinates; ``interp`` for images (the uncovered
    corners take ``fill``), nearest for masks (filled with 0)."""

    def __init__(self, h: int, w: int, matrix: np.ndarray, fill=(0, 0, 0), interp: int = cv2.INTER_LINEAR):
        self.h, self.w = int(h), int(w)
        self.matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 2)
        self.fill, self.interp = tuple(float(v) for v in fill), interp

    def _cv2_matrix(self) -> np.ndarray:
        # cv2 puts pixel centres at integer coordinates: shift by half a pixel on both sides
        centre = np.array([self.w / 2 - 0.5, self.h / 2 - 0.5])
        return np.concatenate([self.matrix, (centre - self.matrix @ centre)[:, None]], axis=1)

    def _warp(self, arr: np.ndarray, interp: int, fill) -> np.ndarray:
        if arr.shape[:2] != (self.h, self.w):
            raise ValueError(f"AffineTransform for {(self.h, self.w)} got an array of size {arr.shape[:2]}")
        out = cv2.warpAffine(
            arr, self._cv2_matrix(), (self.w, self.h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
        )
        return out.reshape(arr.shape)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        fill = self.fill if img.ndim == 3 else self.fill[0]
        return self._warp(img, self.interp, fill)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        dtype = segmentation.dtype
        src = segmentation.astype(np.uint8) if dtype == np.dtype(bool) else segmentation
        return self._warp(src, cv2.INTER_NEAREST, 0).astype(dtype, copy=False)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        centre = np.array([self.w / 2, self.h / 2])
        return (np.asarray(coords, dtype=np.float64) - centre) @ self.matrix.T + centre
