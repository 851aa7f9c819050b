"""projects/sam2/sam2.1_hiera_b+_MOSE_finetune.yaml gives the official optimiser: the image
encoder at 3e-6 (0.6 x 5e-6) with layer-wise decay 0.9 over the 24 Hiera blocks (pos_embed
exempt), no weight decay on biases and LayerNorms, the cosine schedule to a tenth."""

import os

import pytest

import segtrain.modeling  # noqa: F401  (registers the SAM 2 config keys)
from segtrain.config import load_config
from segtrain.modeling import build_model
from segtrain.solver import build_lr_scheduler, build_optimizer

_PRESET = os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "projects", "sam2", "sam2.1_hiera_b+_MOSE_finetune.yaml"
)


def test_mose_recipe_parameter_groups_and_schedule():
    cfg = load_config(_PRESET, ["MODEL.DEVICE", "cpu", "MODEL.SAM2.IMAGE_SIZE", 256, "INPUT.VIDEO.IMAGE_SIZE", 256], [])
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())

    def lr_wd(name):
        return by_param[id(params[name])]

    assert len(model.image_encoder.trunk.blocks) == 24
    assert lr_wd("image_encoder.trunk.blocks.23.attn.qkv.weight") == (pytest.approx(3e-6 * 0.9), 0.1)
    assert lr_wd("image_encoder.trunk.blocks.0.attn.qkv.weight") == (pytest.approx(3e-6 * 0.9**24), 0.1)
    assert lr_wd("image_encoder.trunk.blocks.0.attn.qkv.bias")[1] == 0.0
    assert lr_wd("image_encoder.trunk.blocks.0.norm1.weight")[1] == 0.0  # a torch LayerNorm
    assert lr_wd("image_encoder.trunk.patch_embed.proj.weight")[0] == pytest.approx(3e-6 * 0.9**25)
    assert lr_wd("image_encoder.trunk.pos_embed") == (pytest.approx(3e-6), 0.1)
    assert lr_wd("image_encoder.neck.convs.0.conv.weight") == (pytest.approx(3e-6), 0.1)
    assert lr_wd("maskmem_tpos_enc") == (pytest.approx(5e-6), 0.1)
    assert lr_wd("sam_mask_decoder.iou_prediction_head.layers.0.bias") == (pytest.approx(5e-6), 0.0)
    scheduler = build_lr_scheduler(cfg, optimizer)
    assert scheduler._factor(0) == 1.0 and scheduler._factor(cfg.SOLVER.MAX_ITER) == pytest.approx(0.1)
    assert cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1 and cfg.SOLVER.AMP.DTYPE == "bfloat16"
