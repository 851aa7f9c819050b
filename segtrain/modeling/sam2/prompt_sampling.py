"""Training prompts of the SAM 2 recipe: which frames get prompts and of what kind
(``sample_prompt_plan``), box prompts from GT masks, clicks drawn uniformly from GT or from
the error region, and the corrective click at the centre of the largest error.

Coordinates are (x, y) pixels of the model input; labels follow ``POINT_LABELS``
(-1 padding, 0 negative, 1 positive, 2 / 3 box corners). Random draws use torch's global
generator (seeded and checkpointed by the trainer) unless a ``generator`` is given.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import Tensor

from segtrain.structures.masks import masks_to_boxes

__all__ = [
    "PromptPlan",
    "PromptSettings",
    "sample_prompt_plan",
    "mask_to_box_inclusive",
    "sample_box_points",
    "sample_random_points_from_errors",
    "sample_one_point_from_error_center",
    "get_next_point",
    "concat_points",
]


def _rand(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """Uniform integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


@dataclass
class PromptPlan:
    """The prompts of one batch (drawn once per batch, as SAM 2 does).

    use_pt_input: clicks / box on the conditioning frames (else their GT mask).
    init_cond_frames: prompted frames (frame 0 first); they are encoded without memory.
    frames_to_correct: frames that get ``num_correction_points`` corrective clicks (empty
    with mask prompts).
    box_frames: the conditioning frames whose first prompt is a box (drawn per frame, as the
    official ``prepare_prompt_inputs``); the others get one click drawn from the GT.
    """

    use_pt_input: bool
    init_cond_frames: List[int]
    frames_to_correct: List[int] = field(default_factory=list)
    box_frames: List[int] = field(default_factory=list)


@dataclass(frozen=True)
class PromptSettings:
    """One set of SAM 2's prompt options: the ``*_for_train`` ones (training) or the
    ``*_for_eval`` ones (the model in eval mode and the validation loss)."""

    prob_to_use_pt_input: float
    prob_to_use_box_input: float
    num_init_cond_frames: int
    rand_init_cond_frames: bool
    num_frames_to_correct: int
    rand_frames_to_correct: bool


def sample_prompt_plan(
    num_frames: int,
    *,
    prob_to_use_pt_input: float,
    prob_to_use_box_input: float,
    num_init_cond_frames: int,
    rand_init_cond_frames: bool,
    num_frames_to_correct: int,
    rand_frames_to_correct: bool,
    generator: Optional[torch.Generator] = None,
) -> PromptPlan:
    """SAM 2's ``prepare_prompt_inputs`` draws: points (else GT masks) with ``prob_to_use_pt_input``;
    1..``num_init_cond_frames`` conditioning frames (frame 0 plus random others) when
    ``rand_init_cond_frames``; on each conditioning frame a box with ``prob_to_use_box_input``
    (else a click); the corrected frames are the conditioning frames plus random other frames,
    ``num_init_cond..num_frames_to_correct`` in all when ``rand_frames_to_correct``. A one-frame
    clip (an image) always takes points and one corrected frame, as officially."""
    if num_frames == 1:
        prob_to_use_pt_input, num_frames_to_correct, num_init_cond_frames = 1.0, 1, 1
    use_pt = _rand(generator) < prob_to_use_pt_input
    n_cond = max(1, min(int(num_init_cond_frames), num_frames))
    if rand_init_cond_frames and n_cond > 1:
        n_cond = _randint(1, n_cond, generator)
    n_corr = max(n_cond, min(int(num_frames_to_correct), num_frames))
    if use_pt and rand_frames_to_correct and n_corr > n_cond:
        n_corr = _randint(n_cond, n_corr, generator)
    others = list(range(1, num_frames))
    extra = torch.randperm(len(others), generator=generator)[: n_cond - 1].tolist() if n_cond > 1 else []
    init_cond = [0] + sorted(others[i] for i in extra)
    if not use_pt:
        return PromptPlan(False, init_cond, [])
    box_frames = [t for t in init_cond if _rand(generator) < prob_to_use_box_input]
    rest = [t for t in range(num_frames) if t not in init_cond]
    pick = torch.randperm(len(rest), generator=generator)[: n_corr - n_cond].tolist() if n_corr > n_cond else []
    return PromptPlan(True, init_cond, init_cond + sorted(rest[i] for i in pick), box_frames)


def mask_to_box_inclusive(masks: Tensor) -> Tensor:
    """Tight boxes (x0, y0, x1, y1) of bool masks [N, H, W] in SAM 2's convention: x1 / y1 are
    the last foreground column / row (inclusive), i.e. ``segtrain.structures.masks.masks_to_boxes``
    minus one on x1 / y1; an empty mask gives (0, 0, 0, 0). Returns float32 [N, 4]."""
    box = masks_to_boxes(masks)
    nonempty = masks.flatten(1).any(dim=1)
    box[nonempty, 2:] -= 1
    return box


def sample_box_points(
    masks: Tensor, noise: float = 0.1, noise_bound: int = 20, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """Box prompts from bool masks [N, H, W] as two corner points (labels 2 and 3), each
    coordinate moved uniformly by up to ``noise`` x the box side (at most ``noise_bound``
    pixels) and clipped to the image, as SAM 2's ``sample_box_points``. An empty mask gives
    two padding points (label -1). Returns (coords float [N, 2, 2] (x, y), labels int64 [N, 2])."""
    n, h, w = masks.shape
    box = mask_to_box_inclusive(masks)
    if noise > 0:
        bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        max_dx = torch.clamp(bw * noise, max=noise_bound)
        max_dy = torch.clamp(bh * noise, max=noise_bound)
        jitter = 2 * torch.rand((n, 4), generator=generator).to(box.device) - 1
        box = box + jitter * torch.stack([max_dx, max_dy, max_dx, max_dy], dim=1)
        bounds = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=box.dtype, device=box.device)
        box = torch.minimum(box.clamp(min=0), bounds)
    labels = torch.tensor([2, 3], dtype=torch.int64, device=masks.device).repeat(n, 1)
    empty = ~masks.flatten(1).any(dim=1)
    labels[empty] = -1
    return box.reshape(n, 2, 2), labels


def sample_random_points_from_errors(
    gt: Tensor, pred: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """One click per object drawn uniformly from the error region of ``pred`` (bool
    [N, H, W]; None = an empty prediction, i.e. from the GT foreground): positive (1) on a
    missed pixel, negative (0) on a false positive; no error gives a padding point (-1).
    Returns (coords [N, 1, 2], labels [N, 1])."""
    gt = gt.bool()
    err = gt if pred is None else gt ^ pred.bool()
    n, h, w = gt.shape
    coords = torch.zeros((n, 1, 2), dtype=torch.float32)
    labels = torch.full((n, 1), -1, dtype=torch.int64)
    for i in range(n):
        idx = err[i].flatten().nonzero().flatten().cpu()
        if idx.numel() == 0:
            continue
        k = int(idx[int(torch.randint(idx.numel(), (), generator=generator))])
        y, x = divmod(k, w)
        coords[i, 0] = torch.tensor([x, y], dtype=torch.float32)
        labels[i, 0] = int(bool(gt[i, y, x]))
    return coords.to(gt.device), labels.to(gt.device)


def _deepest_pixel(region: np.ndarray) -> Tuple[float, int, int]:
    """(distance, y, x) of the pixel of ``region`` (bool [H, W]) farthest from every pixel
    outside it, the image border counting as outside (exact Euclidean distance); ties go to
    the first pixel in row-major order. (0.0, -1, -1) for an empty region.

    The distance transform runs on the region's bounding box padded by one pixel: every pixel
    outside the box is at least as far from an inside pixel as the box's padding ring, which
    is outside the region, so the distances are exact. SciPy's exact transform rather than SAM 2's
    OpenCV ``distanceTransform``: the latter's float32 results vary by ~1e-6 between identical
    calls, which changes the chosen pixel among exact ties and would make training runs
    irreproducible."""
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return 0.0, -1, -1
    y0, x0 = int(ys.min()), int(xs.min())
    crop = np.pad(region[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1], 1)
    dist = distance_transform_edt(crop)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(dist[y, x]), y0 + int(y), x0 + int(x)


def sample_one_point_from_error_center(gt: Tensor, pred: Tensor) -> Tuple[Tensor, Tensor]:
    """The corrective click of SAM 2's evaluation and training: the error pixel farthest
    from the error region's boundary (an L2 distance transform, the image border counting as
    boundary), taken in the false negatives (label 1) if their largest distance beats the
    false positives' (label 0). No error gives a padding point (-1). Deterministic: exact
    distances, ties to the first pixel in row-major order (see ``_deepest_pixel``).
    gt, pred: bool [N, H, W]. Returns (coords [N, 1, 2], labels [N, 1])."""
    gt_np = gt.bool().cpu().numpy()
    pred_np = pred.bool().cpu().numpy()
    n = gt_np.shape[0]
    coords = np.zeros((n, 1, 2), dtype=np.float32)
    labels = np.full((n, 1), -1, dtype=np.int64)
    for i in range(n):
        fn_dist, fn_y, fn_x = _deepest_pixel(gt_np[i] & ~pred_np[i])
        fp_dist, fp_y, fp_x = _deepest_pixel(~gt_np[i] & pred_np[i])
        if fn_y < 0 and fp_y < 0:
            continue
        positive = fn_dist > fp_dist
        coords[i, 0] = (fn_x, fn_y) if positive else (fp_x, fp_y)
        labels[i, 0] = int(positive)
    return torch.from_numpy(coords).to(gt.device), torch.from_numpy(labels).to(gt.device)


def get_next_point(
    gt: Tensor, pred: Optional[Tensor], method: str, generator: Optional[torch.Generator] = None
) -> Tuple[Tensor, Tensor]:
    """``"uniform"``: ``sample_random_points_from_errors``; ``"center"``:
    ``sample_one_point_from_error_center`` (``pred`` None = empty prediction)."""
    if method == "uniform":
        return sample_random_points_from_errors(gt, pred, generator)
    if method == "center":
        return sample_one_point_from_error_center(gt, torch.zeros_like(gt, dtype=torch.bool) if pred is None else pred)
    raise ValueError(f"unknown point sampling method {method!r}; valid: uniform, center")


def concat_points(points: Optional[Tuple[Tensor, Tensor]], coords: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Append clicks (coords [N, k, 2], labels [N, k]) to a prompt (or start one)."""
    if points is None:
        return coords, labels
    return torch.cat([points[0], coords.to(points[0])], dim=1), torch.cat([points[1], labels.to(points[1])], dim=1)
