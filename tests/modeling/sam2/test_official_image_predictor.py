"""Parity of ``ImagePredictor`` with the official ``SAM2ImagePredictor``.

``data/official_image_predictor.pt`` was made once with facebookresearch/sam2 at commit
2b90b9f5ceec907a1c18123530e92e794ad901a4: ``build_sam2`` (post-processing on: dynamic
multimask via stability) of ``sam2.1_hiera_t.yaml`` with ``++model.image_size=256`` on CPU,
weights from ``synthetic_state_dict`` (conftest.py), ``SAM2ImagePredictor(model)`` with its
feature sizes set for 256 px (the official ones are those of 1024 px) and torchvision's
ToTensor / Resize / Normalize replaced by equivalents on torch (bilinear with antialiasing;
torchvision does not import here), on a seeded 120 x 160 image; the ``predict`` calls below
(points, box, box + point, batched boxes, normalized coordinates, mask input). Masks are
stored at every 4th pixel (with their sum), low-res logits at every 2nd.
"""

import os

import numpy as np
import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.sam2 import build_image_predictor, build_sam2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_image_predictor.pt")


@pytest.mark.slow
def test_image_predictor_matches_official(synthetic_weights, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects", "sam2", "sam2.1_hiera_t.yaml"))
    cfg.MODEL.SAM2.IMAGE_SIZE = 256
    cfg.MODEL.DEVICE = "cpu"
    shapes = {k: list(v.shape) for k, v in build_sam2(cfg).state_dict().items()}
    torch.save({"model": synthetic_weights(shapes)}, tmp_path / "w.pt")
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pt")
    predictor = build_image_predictor(cfg)  # dynamic multimask via stability, as the official build_sam2
    fx = torch.load(FIXTURE, weights_only=False)
    with pytest.raises(RuntimeError, match="An image must be set"):
        predictor.predict(point_coords=[[1, 1]], point_labels=[1])
    predictor.set_image(fx["image"].numpy())
    results = fx["results"]

    def check(name, masks, ious, low):
        ref = results[name]
        assert masks.shape[-2:] == (120, 160) and masks.shape[:-2] == ref["masks"].shape[:-2]
        assert np.allclose(ious, ref["ious"].numpy(), atol=1e-4), name
        scale = max(float(ref["low"].abs().max()), 1.0)
        assert float(np.abs(low[..., ::2, ::2] - ref["low"].numpy()).max()) <= 1e-3 * scale, name
        m = masks[..., ::4, ::4]
        tol = 1e-3 * max(float(ref["masks"].abs().max()), 1.0)
        assert float(np.abs(m - ref["masks"].numpy()).max()) <= tol, name
        assert abs(float(masks.sum()) - ref["mask_sum"]) <= 1e-3 * max(abs(ref["mask_sum"]), masks.size), name

    for name, ref in results.items():
        if name == "mask_input":
            continue
        check(name, *predictor.predict(**ref["kwargs"]))
    _, ious, low = predictor.predict(**results["point_multi"]["kwargs"])
    best = low[np.argmax(ious)][None]
    out = predictor.predict(point_coords=[[70.0, 55.0]], point_labels=[1], mask_input=best, multimask_output=False)
    check("mask_input", *out)
