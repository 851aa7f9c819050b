"""Frames in and masks out of the SAM 2 video predictor (the official ``sam2/utils/misc.py``
parts it uses): loading a video (uint8 array or a folder of JPEG frames) resized to the
model's input and normalized as the official loader does, and filling small holes in mask
logits (the official code needs its CUDA extension for that; this one runs anywhere)."""

import os
from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch import Tensor

__all__ = ["load_video_frames", "fill_holes_in_mask_scores", "IMG_MEAN", "IMG_STD"]

IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)
_JPEG = (".jpg", ".jpeg", ".JPG", ".JPEG")


def _resize(frame: np.ndarray, image_size: int) -> np.ndarray:
    """PIL's default resampling, as the official loader (so the model sees the same pixels)."""
    return np.asarray(Image.fromarray(frame).convert("RGB").resize((image_size, image_size)))


def load_video_frames(video: Union[str, np.ndarray, Tensor], image_size: int) -> Tuple[Tensor, int, int]:
    """video: uint8 RGB frames [T, H, W, 3] (array or tensor), or a folder of JPEG frames
    named by their index ("00000.jpg", ...). Returns (images [T, 3, S, S] float32 normalized
    by ImageNet mean / std, H, W)."""
    if isinstance(video, str):
        if not os.path.isdir(video):
            raise ValueError(f"init_state: {video!r} is not a folder of JPEG frames")
        names = [p for p in os.listdir(video) if os.path.splitext(p)[-1] in _JPEG]
        if not names:
            raise ValueError(f"init_state: no JPEG frames in {video!r}")
        try:
            names.sort(key=lambda p: int(os.path.splitext(p)[0]))
        except ValueError as e:
            raise ValueError(f"init_state: JPEG frames in {video!r} must be named by their index ({e})") from e
        frames = [np.asarray(Image.open(os.path.join(video, n)).convert("RGB")) for n in names]
    else:
        arr = video.cpu().numpy() if torch.is_tensor(video) else np.asarray(video)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"init_state: frames must be uint8 [T, H, W, 3]; got {arr.dtype} {list(arr.shape)}")
        frames = list(arr)
    height, width = frames[0].shape[:2]
    images = torch.zeros(len(frames), 3, image_size, image_size, dtype=torch.float32)
    for n, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            raise ValueError(f"init_state: frame {n} is {frame.shape[:2]}, frame 0 is {(height, width)}")
        images[n] = torch.from_numpy(_resize(frame, image_size) / 255.0).permute(2, 0, 1)
    images -= torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    return images, height, width


def fill_holes_in_mask_scores(mask: Tensor, max_area: int) -> Tensor:
    """Background regions (logits <= 0, 8-connected) of at most ``max_area`` pixels get the
    logit 0.1. mask: [N, 1, H, W]."""
    if max_area <= 0:
        raise ValueError(f"fill_hole_area must be positive, got {max_area}")
    background = (mask <= 0).cpu().numpy()
    is_hole = np.zeros_like(background)
    for i in range(background.shape[0]):
        labels, num = ndimage.label(background[i, 0], structure=np.ones((3, 3), dtype=bool))
        if num == 0:
            continue
        areas = np.bincount(labels.ravel())
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        is_hole[i, 0] = small[labels]
    return torch.where(torch.from_numpy(is_hole).to(mask.device), torch.tensor(0.1, dtype=mask.dtype), mask)
