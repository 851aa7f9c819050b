"""The built-in ``shapes`` instance-segmentation dataset, generated on first use.

Each image has a textured background (noise, stripes, gradient or checker) and 0-8 shapes
of 6 classes with random size, colour and rotation, drawn in order so later shapes occlude
earlier ones. Annotations are each instance's VISIBLE pixels: a COCO polygon when the
shape is not occluded, else a compressed RLE of what is left; instances left with a tiny
visible area are not drawn at all. Shapes are filled with the COCO rasterization of
their own polygon, so the annotations match the drawn pixels exactly (up to JPEG noise).

Layout: ``<root>/shapes/<split>_n<N>_s<S>/{images/*.jpg, annotations.json}``; the folder
appears atomically (written to a temporary folder, then renamed).
"""

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util

from segtrain.utils.errors import DatasetError

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_COLORS",
    "shapes_dir",
    "generate_shapes",
    "ensure_shapes",
    "render_shapes_image",
    "shape_polygon",
    "rasterize_polygon",
    "draw_background",
    "pick_shape_color",
    "write_jpeg",
    "write_annotations",
    "ensure_generated",
]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]
# Visualization colours per class (RGB); image colours are random.
SHAPES_COLORS = [[220, 20, 60], [0, 130, 200], [60, 180, 75], [255, 225, 25], [145, 30, 180], [245, 130, 48]]
# Dataset category ids start at 1 (as in COCO) so the contiguous-id mapping is exercised.
_CATEGORY_ID_OFFSET = 1
_SPLIT_SEEDS = {"train": 1001, "val": 2002}
_MAX_INSTANCES = 8
_JPEG_QUALITY = 92
_FORMAT_VERSION = 1


def shapes_dir(root: str, split: str, num_images: int, image_size: int) -> str:
    """Folder of one generated split; its name encodes the parameters."""
    return os.path.join(root, "shapes", f"{split}_n{int(num_images)}_s{int(image_size)}")


# ------------------------------------------------------------------ geometry
def shape_polygon(rng: np.random.Generator, cls: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices [V, 2] (x, y) of a shape of class ``cls`` with circumradius ``r``."""
    theta = rng.uniform(0, 2 * np.pi)
    name = SHAPES_CLASSES[cls]
    if name == "circle":
        ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        rx = ry = r
    elif name == "ellipse":
        ang = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        rx, ry = r, r * rng.uniform(0.4, 0.7)
    else:
        n = {"square": 4, "triangle": 3, "hexagon": 6, "star": 10}[name]
        ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
        radii = np.full(n, r)
        if name == "star":
            radii[1::2] = r * 0.45
        pts = np.stack([np.cos(ang) * radii, np.sin(ang) * radii], axis=1)
        rx = ry = None
    if rx is not None:
        pts = np.stack([np.cos(ang) * rx, np.sin(ang) * ry], axis=1)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = pts @ rot.T + np.array([cx, cy])
    # two decimals: the JSON stores exactly the polygon that was rasterized
    return np.round(pts, 2)


def rasterize_polygon(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """bool [h, w]: the COCO rasterization of ``poly`` ([V, 2] x, y vertices)."""
    rle = mask_util.frPyObjects([poly.reshape(-1).tolist()], h, w)
    return mask_util.decode(mask_util.merge(rle)).astype(bool)


# ------------------------------------------------------------------ textures
def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def draw_background(rng: np.random.Generator, s: int) -> Tuple[np.ndarray, List[np.ndarray]]:
    """A float32 [s, s, 3] textured background and the colours it uses."""
    c1, c2 = _random_color(rng), _random_color(rng)
    kind = int(rng.integers(4))
    if kind == 0:  # smooth noise
        small = rng.standard_normal((max(2, s // 16), max(2, s // 16)), dtype=np.float32)
        t = np.clip(cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC) * 0.5 + 0.5, 0, 1)
    else:
        xx = np.arange(s, dtype=np.float32)[None, :]
        yy = np.arange(s, dtype=np.float32)[:, None]
        if kind == 1:  # stripes at a random angle
            ang = rng.uniform(0, np.pi)
            period = rng.uniform(6, max(8, s / 6))
            t = np.floor((xx * np.cos(ang) + yy * np.sin(ang)) / period) % 2
        elif kind == 2:  # linear gradient
            ang = rng.uniform(0, 2 * np.pi)
            proj = xx * np.cos(ang) + yy * np.sin(ang)
            t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
        else:  # checker
            cell = int(rng.integers(max(4, s // 16), max(5, s // 4)))
            t = ((xx // cell) + (yy // cell)) % 2
    noise = rng.standard_normal((s, s), dtype=np.float32) * np.float32(rng.uniform(2, 12))
    t = t.astype(np.float32)
    img = cv2.merge([float(c1[c]) + float(c2[c] - c1[c]) * t + noise for c in range(3)])
    return img, [c1, c2]


def pick_shape_color(rng: np.random.Generator, avoid: List[np.ndarray]) -> np.ndarray:
    """A colour far (L1 > 120) from the background colours, when one can be found quickly."""
    best, best_d = None, -1.0
    for _ in range(20):
        c = _random_color(rng)
        d = min(float(np.abs(c - a).sum()) for a in avoid)
        if d > best_d:
            best, best_d = c, d
        if d > 120:
            break
    return best


# ------------------------------------------------------------------ one image
def render_shapes_image(
    rng: np.random.Generator, image_size: int
) -> Tuple[np.ndarray, List[Dict[str, Any]], np.ndarray]:
    """Draw one image. Returns (RGB uint8 [S, S, 3], instances, id map int16 [S, S]),
    where instance ``k`` has ``category`` (0-based class), ``polygon`` (flat list) and
    ``occluded`` (bool), and the id map holds ``k`` on its visible pixels and -1 elsewhere."""
    s = int(image_size)
    img, bg_colors = draw_background(rng, s)
    n = int(rng.integers(0, _MAX_INSTANCES + 1))
    shapes = []
    for _ in range(n):
        cls = int(rng.integers(len(SHAPES_CLASSES)))
        r = rng.uniform(max(4.0, 0.06 * s), 0.22 * s)
        cx, cy = rng.uniform(r, s - r, size=2)
        poly = shape_polygon(rng, cls, cx, cy, r)
        color = pick_shape_color(rng, bg_colors)
        shapes.append({"category": cls, "polygon": poly, "color": color, "mask": rasterize_polygon(poly, s, s)})

    def id_map(items):
        m = np.full((s, s), -1, dtype=np.int16)
        for k, it in enumerate(items):
            m[it["mask"]] = k
        return m

    ids = id_map(shapes)
    # Drop shapes whose visible part is tiny; removing one only uncovers others, so one pass suffices.
    visible = np.bincount(ids.ravel().astype(np.int64) + 1, minlength=len(shapes) + 1)[1:]
    full = [int(sh["mask"].sum()) for sh in shapes]
    keep = [k for k in range(len(shapes)) if full[k] > 0 and visible[k] >= max(16, 0.1 * full[k])]
    if len(keep) != len(shapes):
        shapes, full = [shapes[k] for k in keep], [full[k] for k in keep]
        ids = id_map(shapes)
        visible = np.bincount(ids.ravel().astype(np.int64) + 1, minlength=len(shapes) + 1)[1:]

    if shapes:
        lut = np.stack([sh["color"] for sh in shapes]).astype(np.float32)  # [K, 3]
        fg = ids >= 0
        shade = rng.standard_normal((int(fg.sum()), 1), dtype=np.float32) * np.float32(5.0)
        img[fg] = lut[ids[fg]] + shade
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    instances = [
        {
            "category": sh["category"],
            "polygon": sh["polygon"].reshape(-1).tolist(),
            "occluded": bool(visible[k] != full[k]),
        }
        for k, sh in enumerate(shapes)
    ]
    return out, instances, ids


# ------------------------------------------------------------------ a split
def generate_shapes(out_dir: str, split: str, num_images: int, image_size: int) -> None:
    """Write ``num_images`` images and ``annotations.json`` into ``out_dir`` (created).
    Deterministic: the same arguments give the same bytes."""
    if split not in _SPLIT_SEEDS:
        raise DatasetError(f"shapes split must be one of {', '.join(_SPLIT_SEEDS)}; got {split!r}")
    s = int(image_size)
    if s < 32:
        raise DatasetError(f"DATASETS.SHAPES.IMAGE_SIZE must be >= 32, got {image_size}")
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(int(num_images)):
        rng = np.random.default_rng([_SPLIT_SEEDS[split], s, i])
        rgb, instances, ids = render_shapes_image(rng, s)
        file_name = f"{i:06d}.jpg"
        write_jpeg(os.path.join(img_dir, file_name), rgb)
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": s, "width": s})
        for k, inst in enumerate(instances):
            vis = ids == k
            rle = mask_util.encode(np.asfortranarray(vis.astype(np.uint8)))
            if inst["occluded"]:
                segm = {"size": [s, s], "counts": rle["counts"].decode("ascii")}
            else:
                segm = [inst["polygon"]]
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": inst["category"] + _CATEGORY_ID_OFFSET,
                    "segmentation": segm,
                    "area": float(vis.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    write_annotations(out_dir, f"segtrain shapes {split}", images=images, annotations=annotations)


def ensure_shapes(root: str, split: str, num_images: int, image_size: int) -> str:
    """The folder of a split, generating it first if needed (``ensure_generated``)."""
    return ensure_generated(
        shapes_dir(root, split, num_images, image_size),
        lambda tmp: generate_shapes(tmp, split, num_images, image_size),
        f"shapes {split} ({num_images} images, {image_size}px)",
    )


# ------------------------------------------------------------------ shared by the generated datasets
def write_jpeg(path: str, rgb: np.ndarray) -> None:
    """Write RGB uint8 [H, W, 3] as a JPEG (quality 92) to ``path``."""
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), _JPEG_QUALITY])
    if not ok:
        raise DatasetError(f"could not encode {path} as JPEG")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def write_annotations(out_dir: str, description: str, **lists: List[Dict[str, Any]]) -> None:
    """Write ``out_dir/annotations.json``: ``info``, the given lists (``images`` or ``videos``,
    and ``annotations``) and the shapes ``categories`` (dataset ids start at 1)."""
    data: Dict[str, Any] = {"info": {"description": description, "version": _FORMAT_VERSION}}
    data.update(lists)
    data["categories"] = [
        {"id": k + _CATEGORY_ID_OFFSET, "name": name, "supercategory": "shape"} for k, name in enumerate(SHAPES_CLASSES)
    ]
    with open(os.path.join(out_dir, "annotations.json"), "w") as f:
        json.dump(data, f, separators=(",", ":"))


def ensure_generated(target: str, generate: Callable[[str], None], description: str) -> str:
    """``target``, after running ``generate(tmp_folder)`` and renaming the result to ``target``
    if ``target/annotations.json`` does not exist yet. Safe when several processes do this at
    once: each writes a private temporary folder and the first rename wins (the copies are
    identical, generation being deterministic)."""
    if os.path.isfile(os.path.join(target, "annotations.json")):
        return target
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(target) + ".tmp-", dir=parent)
    start = time.perf_counter()
    try:
        generate(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, target)
        except OSError as e:
            if not os.path.isfile(os.path.join(target, "annotations.json")):
                raise DatasetError(
                    f"cannot create the {description} dataset at {target!r} ({e.strerror}); remove the folder and retry"
                ) from None
            # another process finished first; its copy is identical
        else:
            logger.info("Generated %s in %.1fs at %s", description, time.perf_counter() - start, target)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target
