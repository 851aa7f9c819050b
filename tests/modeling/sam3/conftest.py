"""Shared helpers for the SAM 3 tests: the fixture folder and the seeded weights that the
official-parity fixtures were made with."""

import os

import pytest
import torch

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def fill_seeded(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Overwrite every state-dict tensor of ``module`` from one seeded generator, in sorted key
    order: 1-D ``*.weight`` (norms) ``1 + scale * N(0, 1)``, everything else ``scale * N(0, 1)``.

    The parity fixtures were made by running this same procedure on the official module of the
    same configuration, so equal key names and shapes give equal weights.
    """
    generator = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    filled = {}
    for name in sorted(state):
        tensor = state[name]
        if not tensor.is_floating_point():
            filled[name] = tensor
            continue
        value = torch.randn(tensor.shape, generator=generator, dtype=torch.float32) * scale
        if tensor.dim() == 1 and name.endswith(".weight"):
            value = value + 1.0
        filled[name] = value.to(tensor.dtype)
    module.load_state_dict(filled, strict=True)


@pytest.fixture(scope="session")
def data_dir() -> str:
    return DATA_DIR


@pytest.fixture(scope="session")
def seeded():
    return fill_seeded


# MODEL.SAM3 overrides of the reduced model that the official fixtures were made at
TINY_SAM3 = [
    "MODEL.META_ARCHITECTURE", "Sam3Image", "MODEL.DEVICE", "cpu", "MODEL.SAM3.IMAGE_SIZE", 112,
    "MODEL.SAM3.VIT.EMBED_DIM", 48, "MODEL.SAM3.VIT.DEPTH", 2, "MODEL.SAM3.VIT.NUM_HEADS", 4,
    "MODEL.SAM3.VIT.GLOBAL_ATT_BLOCKS", [1], "MODEL.SAM3.VIT.WINDOW_SIZE", 4,
    "MODEL.SAM3.VIT.PRETRAIN_IMG_SIZE", 28, "MODEL.SAM3.TEXT.WIDTH", 32, "MODEL.SAM3.TEXT.HEADS", 2,
    "MODEL.SAM3.TEXT.LAYERS", 1, "MODEL.SAM3.D_MODEL", 32, "MODEL.SAM3.NUM_HEADS", 4,
    "MODEL.SAM3.DIM_FEEDFORWARD", 64, "MODEL.SAM3.ENCODER.NUM_LAYERS", 2, "MODEL.SAM3.DECODER.NUM_LAYERS", 2,
    "MODEL.SAM3.DECODER.NUM_QUERIES", 8, "MODEL.SAM3.GEOMETRY.NUM_LAYERS", 1,
]  # fmt: skip


PROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "projects", "sam3")


@pytest.fixture(scope="session")
def tiny_sam3_cfg():
    """``make(*overrides)``: ``projects/sam3/sam3_image.yaml`` with the reduced sizes and
    ``overrides`` (a flat key / value list) merged."""
    from segtrain.config import get_cfg

    def make(*overrides):
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(PROJECT, "sam3_image.yaml"))
        cfg.merge_from_list(TINY_SAM3 + list(overrides))
        return cfg

    return make


# Overrides that shrink projects/sam3/tiny.yaml further for tests (same keys, smaller numbers):
# 32 px inputs, a 4 x 4 token map, width 32, 8 queries
TINY_PRESET_TEST = [
    "MODEL.SAM3.IMAGE_SIZE", 32, "MODEL.SAM3.VIT.EMBED_DIM", 32, "MODEL.SAM3.VIT.DEPTH", 2,
    "MODEL.SAM3.VIT.NUM_HEADS", 2, "MODEL.SAM3.VIT.GLOBAL_ATT_BLOCKS", [1], "MODEL.SAM3.VIT.WINDOW_SIZE", 2,
    "MODEL.SAM3.VIT.PRETRAIN_IMG_SIZE", 32, "MODEL.SAM3.TEXT.WIDTH", 32, "MODEL.SAM3.TEXT.LAYERS", 1,
    "MODEL.SAM3.D_MODEL", 32, "MODEL.SAM3.DIM_FEEDFORWARD", 64, "MODEL.SAM3.ENCODER.NUM_LAYERS", 1,
    "MODEL.SAM3.DECODER.NUM_LAYERS", 2, "MODEL.SAM3.DECODER.NUM_QUERIES", 8, "MODEL.SAM3.GEOMETRY.NUM_LAYERS", 1,
    "DATASETS.SHAPES.NUM_TRAIN", 8, "DATASETS.SHAPES.NUM_VAL", 4, "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.WARMUP_ITERS", 0, "WRITERS.TENSORBOARD", False,
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_preset_cfg():
    """``make(*overrides)``: ``projects/sam3/tiny.yaml`` shrunk by ``TINY_PRESET_TEST``, then
    ``overrides`` (a flat key / value list) merged; not frozen."""
    from segtrain.config import get_cfg

    def make(*overrides):
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(PROJECT, "tiny.yaml"))
        cfg.merge_from_list(TINY_PRESET_TEST + list(overrides))
        return cfg

    return make
