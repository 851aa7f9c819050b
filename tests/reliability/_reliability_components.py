"""Test-only meta-arch for the reliability tests (imported with --module by tools/train_net.py):
a tiny per-pixel foreground classifier trained on the real ``InstanceDatasetMapper`` output
(random resize and flip), with dropout so that the RNG state matters on resume.

``SEGTRAIN_TEST_HANG_AT_ITER=k``: at its k-th training forward the model writes
``<OUTPUT_DIR>/hanging`` and sleeps, so that a test can kill the process mid-training at a
known point."""

import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY


@META_ARCH_REGISTRY.register()
class ReliabilityTestNet(nn.Module):
    """conv -> dropout -> conv: a foreground logit per pixel; loss = BCE against the union of
    the image's instance masks (all-background for an image without instances)."""

    def __init__(self, cfg):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(8, 1, 1))
        self.output_dir = cfg.OUTPUT_DIR
        self.calls = 0

    def forward(self, batched_inputs):
        hang_at = os.environ.get("SEGTRAIN_TEST_HANG_AT_ITER")
        if self.training and hang_at is not None and self.calls == int(hang_at):
            open(os.path.join(self.output_dir, "hanging"), "w").close()
            time.sleep(120)  # the test sends SIGKILL long before this ends
        self.calls += 1
        losses = []
        for d in batched_inputs:
            x = d["image"].float()[None] / 255.0
            logit = self.body(x)[0, 0]
            if not self.training:
                continue
            masks = d["instances"].gt_masks
            target = masks.any(dim=0).float() if len(masks) else torch.zeros_like(logit)
            losses.append(F.binary_cross_entropy_with_logits(logit, target))
        if not self.training:
            return [{} for _ in batched_inputs]
        bce = torch.stack(losses).mean()
        return {"core_loss": bce, "loss_bce": bce}
