"""Test-only components for the engine tests (imported as a user module, also by
tools/train_net.py --module): a tiny meta-arch, an in-memory dataset and a mapper."""

import numpy as np
import torch
from torch import nn

from segtrain.data import DatasetCatalog, MetadataCatalog
from segtrain.data.mappers import MAPPER_REGISTRY
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY

TRAIN_NAME = "engine_test_train"
# set by a test to make the model return a NaN loss component at that forward call
NAN_AT_CALL = {"call": None}
# set by a test: random horizontal flip in the mapper (np.random, as real augmentations draw)
RANDOM_FLIP = {"enabled": False}


@META_ARCH_REGISTRY.register()
class EngineTestNet(nn.Module):
    """conv + BN + dropout + linear predicting each image's mean intensity.
    Training: {"core_loss", "loss_mse", "loss_l1"}; eval: [{"pred": tensor}]."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.query_embed = nn.Embedding(1, 4)
        self.head = nn.Linear(4, 1)
        self.calls = 0

    def forward(self, batched_inputs):
        x = torch.stack([d["image"].float() / 255.0 for d in batched_inputs])
        feat = self.backbone(x).mean(dim=(2, 3)) + self.query_embed.weight
        pred = self.head(self.dropout(feat)).squeeze(1)
        if not self.training:
            return [{"pred": p} for p in pred]
        target = x.mean(dim=(1, 2, 3))
        mse = ((pred - target) ** 2).mean()
        l1 = (pred - target).abs().mean()
        if NAN_AT_CALL["call"] == self.calls:
            l1 = l1 * float("nan")
        self.calls += 1
        return {"core_loss": mse + 0.5 * l1, "loss_mse": mse, "loss_l1": l1}


@MAPPER_REGISTRY.register()
class EngineTestMapper:
    """Dataset dict -> {"image": uint8 [3, 8, 8]}, a fixed random image per image_id, flipped at
    random when ``RANDOM_FLIP["enabled"]``."""

    def __init__(self, cfg, is_train=True):
        self.is_train = is_train

    def __call__(self, d):
        rng = np.random.RandomState(d["image_id"])
        img = rng.randint(0, 256, size=(3, 8, 8)).astype(np.uint8)
        if self.is_train and RANDOM_FLIP["enabled"] and np.random.rand() < 0.5:
            img = img[:, :, ::-1]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img)),
            "image_id": d["image_id"],
            "height": 8,
            "width": 8,
        }


def _dicts():
    return [
        {
            "file_name": f"img{i}.png",
            "image_id": i,
            "height": 8,
            "width": 8,
            "annotations": [{"iscrowd": 0, "category_id": 0, "bbox": [0, 0, 4, 4], "bbox_mode": 1}],
        }
        for i in range(12)
    ]


DatasetCatalog.register(TRAIN_NAME, _dicts)
MetadataCatalog.get(TRAIN_NAME).set(thing_classes=["thing"])


def configure(cfg, output_dir, **overrides):
    """The tiny config used by the engine tests (``overrides``: dotted KEY -> value)."""
    cfg.MODEL.META_ARCHITECTURE = "EngineTestNet"
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = (TRAIN_NAME,)
    cfg.DATASETS.TEST = ()
    cfg.INPUT.DATASET_MAPPER_NAME = "EngineTestMapper"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 8
    cfg.SOLVER.STEPS = (5,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.WARMUP_FACTOR = 0.1
    cfg.SOLVER.CHECKPOINT_PERIOD = 4
    cfg.SEED = 7
    cfg.LOG_PERIOD = 2
    cfg.WRITERS.TENSORBOARD = False
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.merge_from_list([x for k, v in overrides.items() for x in (k, repr(v) if not isinstance(v, str) else v)])
    return cfg
