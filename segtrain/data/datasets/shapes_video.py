"""The built-in ``shapes_video`` dataset: moving, rotating, occluding shapes, generated on first use.

Each video has a textured background (the image generator's) and 1-5 shapes of the 6 shapes
classes. Every shape has a fixed depth (draw order: later shapes occlude earlier ones), spins
at its own angular speed, and follows one of three motions:

- "inside": stays in the frame for the whole clip, bouncing off the borders;
- "enter": starts fully outside one border and slides in after a random number of frames;
- "leave": starts inside and slides out through a border before the last frame.

The first shape of every video is "inside", so frame 0 always shows an object to prompt.
Annotations are each object's VISIBLE pixels per frame, stored as compressed RLE, and ``null``
on frames where nothing of it is visible (outside the frame or fully occluded). Shapes are
filled with the COCO rasterization of their polygon, so the masks match the drawn pixels
exactly (up to JPEG noise).

Layout: ``<root>/shapes_video/<split>_n<N>_f<T>_s<S>/{videos/<video>/<frame>.jpg, annotations.json}``
(YouTube-VIS format, read by ``load_ytvis_json``); the folder appears atomically (written to a
temporary folder, then renamed).
"""

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .builtin import get_datasets_root

# Reuse the image generator's drawing so that both datasets look alike and share fixes.
from .shapes import (
    SHAPES_CLASSES,
    SHAPES_COLORS,
    draw_background,
    ensure_generated,
    pick_shape_color,
    rasterize_polygon,
    shape_polygon,
    write_annotations,
    write_jpeg,
)
from .ytvis import YTVIS_EVALUATOR_TYPE, load_ytvis_json

__all__ = [
    "SHAPES_VIDEO_SPLITS",
    "shapes_video_dir",
    "render_shapes_video",
    "generate_shapes_video",
    "ensure_shapes_video",
    "register_shapes_video",
    "register_shapes_video_from_cfg",
]

logger = logging.getLogger(__name__)

# dataset name -> split; sizes come from DATASETS.SHAPES_VIDEO
SHAPES_VIDEO_SPLITS = {"shapes_video_train": "train", "shapes_video_val": "val"}
_DEFAULT_SIZES = {"num_train": 300, "num_val": 30, "num_frames": 12, "image_size": 128}
_SPLIT_SEEDS = {"train": 3003, "val": 4004}
_CATEGORY_ID_OFFSET = 1  # dataset ids start at 1, as in the image shapes dataset
_MAX_OBJECTS = 5
_MOTIONS = ("inside", "enter", "leave")


def shapes_video_dir(root: str, split: str, num_videos: int, num_frames: int, image_size: int) -> str:
    """Folder of one generated split; its name encodes the parameters."""
    return os.path.join(root, "shapes_video", f"{split}_n{int(num_videos)}_f{int(num_frames)}_s{int(image_size)}")


# ------------------------------------------------------------------ trajectories
def _bounce(p0: float, v: float, lo: float, hi: float, n: int) -> np.ndarray:
    """Positions [n] of a point moving at speed ``v`` in [lo, hi], reflected at the ends."""
    span = max(hi - lo, 1e-6)
    raw = (p0 - lo) + v * np.arange(n)
    folded = np.mod(raw, 2 * span)  # a reflection is a fold of the unbounded line
    return lo + np.where(folded > span, 2 * span - folded, folded)


def _trajectory(rng: np.random.Generator, motion: str, r: float, s: int, n: int) -> np.ndarray:
    """Centres [n, 2] (x, y) of one object with circumradius ``r`` in an ``s`` x ``s`` frame."""
    if motion == "inside":
        speed = rng.uniform(0.005, 0.025) * s
        ang = rng.uniform(0, 2 * np.pi)
        x = _bounce(rng.uniform(r, s - r), speed * np.cos(ang), r, s - r, n)
        y = _bounce(rng.uniform(r, s - r), speed * np.sin(ang), r, s - r, n)
        return np.stack([x, y], axis=1)
    # "enter" / "leave": a straight line through a border. At frame t_out the centre is r
    # beyond the border (so the shape, inside its circumcircle, is fully outside).
    speed = rng.uniform(0.05, 0.09) * s
    t_out = float(rng.integers(0, max(1, n // 2)) if motion == "enter" else rng.integers(max(2, n // 2), max(3, n)))
    if motion == "leave":
        # at frame 0 the centre is speed * t_out inside the border: keep it within the frame
        speed = min(speed, (s - r) / max(t_out, 1.0))
    side = int(rng.integers(4))
    normal = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])[side]  # inward
    along = rng.uniform(r, s - r)
    edge = {0: (-r, along), 1: (s + r, along), 2: (along, -r), 3: (along, s + r)}[side]
    drift = rng.uniform(-0.01, 0.01) * s * np.array([normal[1], normal[0]])  # along the border
    t = np.arange(n, dtype=np.float64)[:, None]
    if motion == "enter":
        # fully outside until t_out, partly visible from t_out + 1 on (never in frame 0)
        return np.asarray(edge) + (normal * speed + drift) * (t - t_out)
    # leave: fully outside from t_out on (t_out <= n - 1, so it leaves mid-clip)
    return np.asarray(edge) - (normal * speed + drift) * (t - t_out)


# ------------------------------------------------------------------ one video
def render_shapes_video(
    rng: np.random.Generator, num_frames: int, image_size: int
) -> Tuple[List[np.ndarray], List[Dict[str, Any]]]:
    """Draw one video. Returns (frames: list of RGB uint8 [S, S, 3], objects), where object
    ``k`` (in depth order, later on top) has ``category`` (0-based class), ``motion`` and
    ``masks``: bool [T, S, S] of its visible pixels per frame."""
    s, n_t = int(image_size), int(num_frames)
    bg, bg_colors = draw_background(rng, s)
    n_obj = int(rng.integers(1, _MAX_OBJECTS + 1))
    objects = []
    for k in range(n_obj):
        motion = "inside" if k == 0 else _MOTIONS[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
        cls = int(rng.integers(len(SHAPES_CLASSES)))
        r = rng.uniform(max(4.0, 0.08 * s), 0.2 * s)
        # one polygon around the origin, then rotated and moved per frame
        base = shape_polygon(rng, cls, 0.0, 0.0, r)
        omega = rng.uniform(-0.1, 0.1)
        centres = _trajectory(rng, motion, r, s, n_t)
        color = pick_shape_color(rng, bg_colors)
        full = []
        for t in range(n_t):
            c, si = np.cos(omega * t), np.sin(omega * t)
            poly = np.round(base @ np.array([[c, -si], [si, c]]).T + centres[t], 2)
            full.append(rasterize_polygon(poly, s, s))
        objects.append({"category": cls, "motion": motion, "color": color, "full": np.stack(full)})

    frames = []
    ids = np.full((n_t, s, s), -1, dtype=np.int16)
    for k, obj in enumerate(objects):
        ids[obj["full"]] = k  # later objects overwrite earlier ones: they are in front
    lut = np.stack([o["color"] for o in objects]).astype(np.float32)  # [K, 3]
    for t in range(n_t):
        # fresh sensor noise and shading each frame, like a camera
        img = bg + rng.standard_normal((s, s, 1), dtype=np.float32) * np.float32(2.0)
        fg = ids[t] >= 0
        shade = rng.standard_normal((int(fg.sum()), 1), dtype=np.float32) * np.float32(5.0)
        img[fg] = lut[ids[t][fg]] + shade
        frames.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    out = [{"category": o["category"], "motion": o["motion"], "masks": ids == k} for k, o in enumerate(objects)]
    return frames, out


# ------------------------------------------------------------------ a split
def generate_shapes_video(out_dir: str, split: str, num_videos: int, num_frames: int, image_size: int) -> None:
    """Write ``num_videos`` videos of JPEG frames and ``annotations.json`` into ``out_dir``.
    Deterministic: the same arguments give the same bytes."""
    if split not in _SPLIT_SEEDS:
        raise DatasetError(f"shapes_video split must be one of {', '.join(_SPLIT_SEEDS)}; got {split!r}")
    s, n_t = int(image_size), int(num_frames)
    if s < 32:
        raise DatasetError(f"DATASETS.SHAPES_VIDEO.IMAGE_SIZE must be >= 32, got {image_size}")
    if n_t < 1:
        raise DatasetError(f"DATASETS.SHAPES_VIDEO.NUM_FRAMES must be >= 1, got {num_frames}")
    videos, annotations = [], []
    ann_id = 1
    for i in range(int(num_videos)):
        rng = np.random.default_rng([_SPLIT_SEEDS[split], s, n_t, i])
        frames, objects = render_shapes_video(rng, n_t, s)
        rel_dir = os.path.join("videos", f"{i:05d}")
        os.makedirs(os.path.join(out_dir, rel_dir), exist_ok=True)
        file_names = []
        for t, rgb in enumerate(frames):
            rel = f"{rel_dir}/{t:05d}.jpg"
            write_jpeg(os.path.join(out_dir, rel), rgb)
            file_names.append(rel)
        video_id = i + 1
        videos.append({"id": video_id, "file_names": file_names, "height": s, "width": s, "length": n_t})
        for obj in objects:
            segms, bboxes, areas = [], [], []
            for t in range(n_t):
                m = obj["masks"][t]
                if not m.any():
                    segms.append(None)
                    bboxes.append(None)
                    areas.append(None)
                    continue
                rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
                bboxes.append([float(v) for v in mask_util.toBbox(rle)])
                areas.append(float(m.sum()))
                segms.append({"size": [s, s], "counts": rle["counts"].decode("ascii")})
            if all(sg is None for sg in segms):
                continue  # fully hidden for the whole clip: not an object of this video
            annotations.append(
                {
                    "id": ann_id,
                    "video_id": video_id,
                    "category_id": obj["category"] + _CATEGORY_ID_OFFSET,
                    "segmentations": segms,
                    "bboxes": bboxes,
                    "areas": areas,
                    "iscrowd": 0,
                    "motion": obj["motion"],
                }
            )
            ann_id += 1
    write_annotations(out_dir, f"segtrain shapes_video {split}", videos=videos, annotations=annotations)


def ensure_shapes_video(root: str, split: str, num_videos: int, num_frames: int, image_size: int) -> str:
    """The folder of a split, generating it first if needed (``shapes.ensure_generated``)."""
    return ensure_generated(
        shapes_video_dir(root, split, num_videos, num_frames, image_size),
        lambda tmp: generate_shapes_video(tmp, split, num_videos, num_frames, image_size),
        f"shapes_video {split} ({num_videos} videos x {num_frames} frames, {image_size}px)",
    )


# ------------------------------------------------------------------ registration
def register_shapes_video(
    root: Optional[str] = None,
    *,
    num_train: int = _DEFAULT_SIZES["num_train"],
    num_val: int = _DEFAULT_SIZES["num_val"],
    num_frames: int = _DEFAULT_SIZES["num_frames"],
    image_size: int = _DEFAULT_SIZES["image_size"],
) -> None:
    """(Re-)register ``shapes_video_train`` / ``shapes_video_val`` with these sizes under ``root``
    (default ``$SEGTRAIN_DATASETS``). Videos are generated at the first ``get``."""
    root = os.path.abspath(root) if root else get_datasets_root()
    sizes = {"train": int(num_train), "val": int(num_val)}
    for name, split in SHAPES_VIDEO_SPLITS.items():
        n = sizes[split]
        folder = shapes_video_dir(root, split, n, num_frames, image_size)

        def load(name=name, split=split, n=n):
            d = ensure_shapes_video(root, split, n, num_frames, image_size)
            return load_ytvis_json(os.path.join(d, "annotations.json"), d, name)

        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_colors=[list(c) for c in SHAPES_COLORS],
            thing_dataset_id_to_contiguous_id={k + _CATEGORY_ID_OFFSET: k for k in range(len(SHAPES_CLASSES))},
            evaluator_type=YTVIS_EVALUATOR_TYPE,
            json_file=os.path.join(folder, "annotations.json"),
            image_root=folder,
            num_videos=n,
            num_frames=int(num_frames),
            image_size=int(image_size),
        )


def register_shapes_video_from_cfg(cfg) -> None:
    """Re-register the shapes_video datasets with ``cfg.DATASETS.SHAPES_VIDEO`` sizes (and the
    current ``$SEGTRAIN_DATASETS``); the video loader builders call this first."""
    sv = cfg.DATASETS.SHAPES_VIDEO
    register_shapes_video(
        num_train=sv.NUM_TRAIN, num_val=sv.NUM_VAL, num_frames=sv.NUM_FRAMES, image_size=sv.IMAGE_SIZE
    )


register_shapes_video(**_DEFAULT_SIZES)
