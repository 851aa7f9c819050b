"""Random augmentations: each draws its parameters from ``np.random`` (seeded per data
loader worker) and returns a deterministic ``Transform`` for one image."""

import logging
import math
from typing import List, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageEnhance

from segtrain.utils.errors import ConfigError

from .transform import (
    AffineTransform,
    ColorTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "Augmentation",
    "ResizeShortestEdge",
    "RandomFlip",
    "ResizeScale",
    "FixedSizeCrop",
    "RandomCrop",
    "RandomSquareResize",
    "RandomPadToSize",
    "ColorJitter",
    "RandomAffine",
    "RandomGrayscale",
    "apply_augmentations",
]

logger = logging.getLogger(__name__)


class Augmentation:
    """Draws a ``Transform`` for an image (HxWxC uint8 RGB)."""

    def get_transform(self, image: np.ndarray) -> Transform:
        raise NotImplementedError

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"


def apply_augmentations(augs: Sequence[Augmentation], image: np.ndarray) -> Tuple[np.ndarray, TransformList]:
    """Apply ``augs`` in order, each seeing the previous output.
    Returns (augmented image, the ``TransformList`` to replay on masks / coordinates)."""
    tfms = []
    for aug in augs:
        t = aug.get_transform(image)
        image = t.apply_image(image)
        tfms.append(t)
    return image, TransformList(tfms)


class ResizeShortestEdge(Augmentation):
    """Resize so the short edge is ``short_edge_length`` (one of the values for "choice",
    uniform in [min, max] for "range"), keeping the long edge <= ``max_size``."""

    def __init__(self, short_edge_length: Union[int, Sequence[int]], max_size: int = 0, sample_style: str = "choice"):
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        if sample_style not in ("choice", "range"):
            raise ConfigError(f"ResizeShortestEdge sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ConfigError(
                f"ResizeShortestEdge with sample_style 'range' needs (min, max) sizes, got {tuple(short_edge_length)}"
            )
        self.short_edge_length = tuple(int(s) for s in short_edge_length)
        self.max_size = int(max_size)
        self.sample_style = sample_style

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size <= 0:
            return NoOpTransform()
        new_h, new_w = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w)

    @staticmethod
    def get_output_shape(h: int, w: int, short_edge: int, max_size: int) -> Tuple[int, int]:
        """(new_h, new_w) with the short edge ``short_edge`` and long edge <= ``max_size``."""
        scale = short_edge / min(h, w)
        new_h, new_w = h * scale, w * scale
        if max_size > 0 and max(new_h, new_w) > max_size:
            shrink = max_size / max(new_h, new_w)
            new_h, new_w = new_h * shrink, new_w * shrink
        return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))


class RandomFlip(Augmentation):
    """Flip with probability ``prob``, horizontally or vertically."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ConfigError("RandomFlip needs exactly one of horizontal / vertical")
        self.prob, self.horizontal, self.vertical = float(prob), horizontal, vertical

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if np.random.uniform() >= self.prob:
            return NoOpTransform()
        return HFlipTransform(w) if self.horizontal else VFlipTransform(h)


class ResizeScale(Augmentation):
    """Large-scale jitter, part 1: scale the image so that it fits
    (target_height, target_width) * U(min_scale, max_scale), keeping its aspect ratio."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int):
        if not 0 < min_scale <= max_scale:
            raise ConfigError(f"ResizeScale needs 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.target_height, self.target_width = int(target_height), int(target_width)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        factor = min(scale * self.target_height / h, scale * self.target_width / w)
        new_h, new_w = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
        return ResizeTransform(h, w, new_h, new_w)


class FixedSizeCrop(Augmentation):
    """Large-scale jitter, part 2: a random crop to at most ``crop_size`` (h, w), then
    padding at the bottom/right up to exactly ``crop_size`` (image with ``pad_value``)."""

    def __init__(self, crop_size: Tuple[int, int], pad_value: float = 128.0):
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.pad_value = pad_value

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        ch, cw = self.crop_size
        tfms: List[Transform] = []
        if h > ch or w > cw:
            y0 = int(np.random.randint(0, max(h - ch, 0) + 1))
            x0 = int(np.random.randint(0, max(w - cw, 0) + 1))
            tfms.append(CropTransform(x0, y0, min(w, cw), min(h, ch)))
            h, w = min(h, ch), min(w, cw)
        if h < ch or w < cw:
            tfms.append(PadTransform(ch - h, cw - w, self.pad_value))
        return TransformList(tfms)


class RandomSquareResize(Augmentation):
    """Resize to ``s`` x ``s`` for ``s`` drawn uniformly from ``sizes``, without keeping the
    aspect ratio (SAM 3's ``RandomResizeAPI`` with ``square=True``)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = tuple(int(s) for s in sizes)
        if not self.sizes or min(self.sizes) <= 0:
            raise ConfigError(f"RandomSquareResize needs sizes > 0, got {self.sizes}")

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        size = self.sizes[int(np.random.randint(len(self.sizes)))]
        return ResizeTransform(h, w, size, size)


class RandomPadToSize(Augmentation):
    """Pad to ``size`` x ``size`` with the content at a random place (each side's share drawn
    uniformly, SAM 3's ``PadToSizeAPI``), or at the top left with ``bottom_right``."""

    def __init__(self, size: int, pad_value: float = 0.0, bottom_right: bool = False):
        self.size, self.pad_value, self.bottom_right = int(size), float(pad_value), bool(bottom_right)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        pad_y, pad_x = self.size - h, self.size - w
        if pad_y < 0 or pad_x < 0:
            raise ValueError(f"RandomPadToSize({self.size}): the image is larger ({h}x{w})")
        top = 0 if self.bottom_right else int(np.random.randint(pad_y + 1))
        left = 0 if self.bottom_right else int(np.random.randint(pad_x + 1))
        return PadTransform(pad_y - top, pad_x - left, self.pad_value, pad_top=top, pad_left=left)


class RandomCrop(Augmentation):
    """Crop a random window. ``crop_type``: "relative" (fraction ``crop_size`` of the
    image), "relative_range" (fraction uniform in [crop_size, 1]), "absolute" (pixels
    (h, w), capped at the image size)."""

    _TYPES = ("relative", "relative_range", "absolute")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in self._TYPES:
            raise ConfigError(f"INPUT.CROP.TYPE must be one of {', '.join(self._TYPES)}; got {crop_type!r}")
        if len(crop_size) != 2:
            raise ConfigError(f"INPUT.CROP.SIZE must be (h, w), got {list(crop_size)}")
        if crop_type.startswith("relative") and not all(0 < s <= 1 for s in crop_size):
            raise ConfigError(f"INPUT.CROP.SIZE must be in (0, 1] for crop type {crop_type!r}, got {list(crop_size)}")
        self.crop_type, self.crop_size = crop_type, tuple(crop_size)

    def _crop_hw(self, h: int, w: int) -> Tuple[int, int]:
        if self.crop_type == "relative":
            fh, fw = self.crop_size
        elif self.crop_type == "relative_range":
            fh = np.random.uniform(self.crop_size[0], 1.0)
            fw = np.random.uniform(self.crop_size[1], 1.0)
        else:
            return min(h, int(self.crop_size[0])), min(w, int(self.crop_size[1]))
        return max(1, int(h * fh + 0.5)), max(1, int(w * fw + 0.5))

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        ch, cw = self._crop_hw(h, w)
        y0 = int(np.random.randint(0, h - ch + 1))
        x0 = int(np.random.randint(0, w - cw + 1))
        return CropTransform(x0, y0, cw, ch)


class ColorJitter(Augmentation):
    """torchvision's ``ColorJitter`` on uint8 RGB: brightness, contrast and saturation factors
    uniform in [1 - v, 1 + v] (0 disables one), applied in a random order, each as PIL's
    ``ImageEnhance`` does it (a blend with black, with the mean grey level, with the grey image),
    which is what torchvision runs on PIL images (the SAM 2 training pipeline).
    ``per_frame``: a video mapper draws it anew for every frame instead of once per clip."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, per_frame=False):
        for name, v in (("BRIGHTNESS", brightness), ("CONTRAST", contrast), ("SATURATION", saturation)):
            if not 0 <= v <= 1:
                raise ConfigError(f"INPUT.COLOR_JITTER.{name} must be in [0, 1], got {v}")
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.per_frame = bool(per_frame)

    def get_transform(self, image: np.ndarray) -> Transform:
        order = [int(i) for i in np.random.permutation(3)]
        factors = [
            float(np.random.uniform(1 - v, 1 + v)) if v > 0 else None
            for v in (self.brightness, self.contrast, self.saturation)
        ]
        steps = [(i, factors[i]) for i in order if factors[i] is not None]
        if not steps:
            return NoOpTransform()
        enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)

        def jitter(img: np.ndarray) -> np.ndarray:
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"ColorJitter needs an HxWx3 uint8 RGB image, got {img.shape}")
            pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
            for i, f in steps:
                pil = enhancers[i](pil).enhance(f)
            return np.asarray(pil)

        names = ("b", "c", "s")
        return ColorTransform(jitter, name="color_jitter(" + ", ".join(f"{names[i]}={f:.3f}" for i, f in steps) + ")")


class RandomGrayscale(Augmentation):
    """With probability ``prob``, the grey level (ITU-R 601-2 luma, PIL's "L") in all three
    channels."""

    def __init__(self, prob: float):
        if not 0 <= prob <= 1:
            raise ConfigError(f"INPUT.VIDEO.GRAYSCALE_PROB must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def get_transform(self, image: np.ndarray) -> Transform:
        if np.random.uniform() >= self.prob:
            return NoOpTransform()

        def gray(img: np.ndarray) -> np.ndarray:
            g = np.asarray(Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).convert("L"))
            return np.repeat(g[..., None], 3, axis=2)

        return ColorTransform(gray, name="grayscale")


class RandomAffine(Augmentation):
    """torchvision's ``RandomAffine`` parameters: a rotation uniform in [-degrees, degrees] and an
    x-shear uniform in [-shear, shear] (degrees, clockwise) about the image centre, the image
    size kept; the image interpolated (``interp``) with ``fill`` in the uncovered corners."""

    def __init__(self, degrees: float, shear: float = 0.0, fill=(123, 116, 103), interp: int = cv2.INTER_LINEAR):
        if degrees < 0 or shear < 0:
            raise ConfigError(f"RandomAffine: degrees and shear must be >= 0, got {degrees}, {shear}")
        self.degrees, self.shear, self.fill, self.interp = float(degrees), float(shear), tuple(fill), interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        angle = float(np.random.uniform(-self.degrees, self.degrees))
        shear = float(np.random.uniform(-self.shear, self.shear)) if self.shear > 0 else 0.0
        rot, sx = math.radians(angle), math.radians(shear)
        # rotation times x-shear (torchvision's RSS with y-shear 0 and scale 1)
        matrix = np.array(
            [
                [math.cos(rot), -math.cos(rot) * math.tan(sx) - math.sin(rot)],
                [math.sin(rot), -math.sin(rot) * math.tan(sx) + math.cos(rot)],
            ]
        )
        return AffineTransform(h, w, matrix, self.fill, self.interp)
