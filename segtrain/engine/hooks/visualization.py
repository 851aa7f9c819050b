"""Prediction images: ground truth beside the model's prediction on a few fixed validation inputs."""

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from segtrain.checkpoint import unwrap_model
from segtrain.evaluation.evaluator import inference_context
from segtrain.utils import comm
from segtrain.utils.env import seeded_rng
from segtrain.utils.visualizer import Visualizer

from ..train_loop import HookBase
from ._lazy import build_if_factory

__all__ = ["VisualizationHook", "render_predictions"]

logger = logging.getLogger(__name__)


def render_predictions(
    inputs: Sequence[Mapping[str, Any]],
    outputs: Sequence[Mapping[str, Any]],
    *,
    metadata: Any = None,
    score_threshold: float = 0.5,
    title: str = "prediction",
    image_format: str = "RGB",
) -> Optional[np.ndarray]:
    """One row per input: ground truth (its ``instances``: ``gt_masks`` bool [N, H, W],
    ``gt_classes`` [N]) on the left, the prediction (``panoptic_seg``, else ``instances``, else
    ``sem_seg`` [K, H, W]) on the right, both on the input ``image`` (uint8 [3, H, W]). Returns RGB uint8
    [sum of H, 2 * max W, 3], or None when an output has neither."""
    rows = []
    for inp, out in zip(inputs, outputs):
        img = inp["image"].permute(1, 2, 0).cpu().numpy()
        if image_format == "BGR":
            img = img[:, :, ::-1]
        gt = Visualizer(img, metadata)
        inst = inp.get("instances")
        if inst is not None and len(inst) > 0 and inst.has("gt_masks"):
            classes = inst.gt_classes.tolist() if inst.has("gt_classes") else None
            gt.overlay_instances(
                masks=inst.gt_masks.cpu().numpy(),
                class_ids=classes,
                labels=[gt.class_name(c) for c in classes] if classes is not None else None,
            )
        pred = Visualizer(img, metadata)
        if "panoptic_seg" in out:
            seg, info = out["panoptic_seg"]
            pred.draw_panoptic_seg(seg.cpu(), info or [])
        elif "instances" in out:
            pred.draw_instance_predictions(out["instances"].to("cpu"), score_threshold=score_threshold)
        elif "sem_seg" in out:
            pred.draw_sem_seg(out["sem_seg"].detach().float().cpu())
        else:
            return None
        panels = []
        for vis, text in ((gt, "ground truth"), (pred, title)):
            panel = vis.get_output()
            scale = min(0.4, panel.shape[1] / 400)  # the title fits small images too
            cv2.putText(
                panel, text, (3, 4 + int(25 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
            )
            panels.append(panel)
        rows.append(np.concatenate(panels, axis=1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


class VisualizationHook(HookBase):
    """Every ``period`` iterations (and after the last one) writes
    ``<output_dir>/iter_<iteration:07d>.png`` (``render_predictions``: ground truth | prediction,
    one row per input) for a few fixed validation inputs. Main process only; the model runs in
    eval mode under ``torch.no_grad`` and gets its training mode back after. The RNGs are seeded
    with 0 for the pass and restored after, so the training streams do not move.

    inputs: a list of model-input dicts (test-mapper outputs), or a function returning one
    (called on first use). metadata: for class names and colours.
    """

    def __init__(
        self,
        period: int,
        inputs: Any,
        output_dir: str,
        *,
        model: Optional[nn.Module] = None,
        metadata: Any = None,
        score_threshold: float = 0.5,
        image_format: str = "RGB",
    ):
        self._period = int(period)
        self._inputs_or_factory = inputs
        self._inputs: Optional[List[Dict[str, Any]]] = None
        self._output_dir = output_dir
        self._model = model
        self._metadata = metadata
        self._threshold = float(score_threshold)
        self._format = image_format
        self._warned = False

    def _model_inputs(self) -> List[Dict[str, Any]]:
        if self._inputs is None:
            self._inputs = list(build_if_factory(self._inputs_or_factory))
        # predictions at the size of the drawn (mapped) image, not the original one
        return [
            {
                **{k: v for k, v in d.items() if k != "instances"},
                "height": int(d["image"].shape[-2]),
                "width": int(d["image"].shape[-1]),
            }
            for d in self._inputs
        ]

    def write(self) -> Optional[str]:
        """Render and write the PNG of the current iteration; returns its path (None when skipped)."""
        model = unwrap_model(self._model if self._model is not None else self.trainer.model)
        inputs = self._model_inputs()
        if not inputs:
            return None
        it = self.trainer.iter
        with seeded_rng(0, cuda=True), inference_context(model), torch.no_grad():
            outputs = [model([x])[0] for x in inputs]
        grid = render_predictions(
            self._inputs,
            outputs,
            metadata=self._metadata,
            score_threshold=self._threshold,
            title=f"prediction, iteration {it}",
            image_format=self._format,
        )
        if grid is None:
            if not self._warned:
                logger.warning(
                    f"visualization: the model's outputs have no 'instances' or 'sem_seg' "
                    f"(keys {sorted(outputs[0])}); nothing drawn"
                )
                self._warned = True
            return None
        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, f"iter_{it:07d}.png")
        if not cv2.imwrite(path, np.ascontiguousarray(grid[:, :, ::-1])):
            raise OSError(f"could not write {path!r}")
        logger.info(f"Wrote predictions on {len(inputs)} validation images to {path}")
        return path

    def after_step(self):
        if not comm.is_main_process():
            return
        next_iter = self.trainer.iter + 1
        if (self._period > 0 and next_iter % self._period == 0) or next_iter == self.trainer.max_iter:
            self.write()
