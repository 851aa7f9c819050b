"""projects/sam3/roboflow_ft.yaml and odinw_ft.yaml give the official SAM 3 fine-tuning recipe:
the three LR groups (transformer 8e-5, vision 2.5e-5 with layer-wise decay 0.9 over the ViT
blocks, pos_embed exempt, text 5e-6), weight decay 0.1 except on biases and LayerNorms, the
inverse-square-root schedule with its 20-step warm-up and cool-down, 20 (ODinW: 40) epochs over
the training images, boxes only (no segmentation head, no mask loss) unless
MODEL.SAM3.ENABLE_SEGMENTATION is set, and the official resize of the training images."""

import os

import pytest

import segtrain.modeling  # noqa: F401  (registers the SAM 3 config keys)
from segtrain.config import load_config
from segtrain.data.datasets import write_roboflow_shapes
from segtrain.data.transforms import RandomPadToSize, RandomSquareResize, build_augmentations
from segtrain.engine.epochs import apply_max_epochs
from segtrain.modeling import build_model
from segtrain.solver import build_lr_scheduler, build_optimizer

_PROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "projects", "sam3")

# a 3-block ViT (layer decay over blocks 0-2) and a small rest: the recipe's keys are what is tested
_SMALL = [
    "MODEL.DEVICE", "cpu", "MODEL.SAM3.IMAGE_SIZE", 56, "MODEL.SAM3.VIT.EMBED_DIM", 32,
    "MODEL.SAM3.VIT.DEPTH", 3, "MODEL.SAM3.VIT.NUM_HEADS", 2, "MODEL.SAM3.VIT.GLOBAL_ATT_BLOCKS", [2],
    "MODEL.SAM3.VIT.WINDOW_SIZE", 2, "MODEL.SAM3.VIT.PRETRAIN_IMG_SIZE", 28, "MODEL.SAM3.TEXT.WIDTH", 32,
    "MODEL.SAM3.TEXT.HEADS", 2, "MODEL.SAM3.TEXT.LAYERS", 1, "MODEL.SAM3.D_MODEL", 32, "MODEL.SAM3.NUM_HEADS", 2,
    "MODEL.SAM3.DIM_FEEDFORWARD", 64, "MODEL.SAM3.ENCODER.NUM_LAYERS", 1, "MODEL.SAM3.DECODER.NUM_LAYERS", 1,
    "MODEL.SAM3.DECODER.NUM_QUERIES", 4, "MODEL.SAM3.GEOMETRY.NUM_LAYERS", 1,
]  # fmt: skip


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rf_recipe") / "export")
    # 7 training images (6 with objects, 1 empty)
    return write_roboflow_shapes(root, num_train=6, num_valid=2, num_test=2, image_size=48, masks=False)


@pytest.fixture
def recipe(export):
    def load(file, *overrides):
        return load_config(os.path.join(_PROJECT, file), ["DATASETS.ROBOFLOW.ROOT", export] + _SMALL + list(overrides))

    return load


def _lr_wd(optimizer, model):
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {n: by_param[id(p)] for n, p in model.named_parameters()}


def test_parameter_groups(recipe):
    cfg = recipe("roboflow_ft.yaml")
    model = build_model(cfg)
    got = _lr_wd(build_optimizer(cfg, model), model)
    trunk, vision, text, rest = "backbone.vision_backbone.trunk", 2.5e-5, 5e-6, 8e-5
    # blocks.i learns at 0.9 ** (4 - (i + 1)) of the vision rate, the input layers at 0.9 ** 4
    assert got[f"{trunk}.blocks.2.attn.qkv.weight"] == (pytest.approx(vision * 0.9), 0.1)
    assert got[f"{trunk}.blocks.0.attn.qkv.weight"] == (pytest.approx(vision * 0.9**3), 0.1)
    assert got[f"{trunk}.blocks.0.attn.qkv.bias"] == (pytest.approx(vision * 0.9**3), 0.0)
    assert got[f"{trunk}.blocks.1.norm1.weight"] == (pytest.approx(vision * 0.9**2), 0.0)
    assert got[f"{trunk}.patch_embed.proj.weight"] == (pytest.approx(vision * 0.9**4), 0.1)
    assert got[f"{trunk}.ln_pre.weight"] == (pytest.approx(vision * 0.9**4), 0.0)
    assert got[f"{trunk}.pos_embed"] == (pytest.approx(vision), 0.1)
    assert got["backbone.vision_backbone.convs.0.dconv_2x2_0.weight"] == (pytest.approx(vision), 0.1)
    text_names = [n for n in got if n.startswith("backbone.language_backbone.")]
    assert text_names and all(got[n][0] == pytest.approx(text) for n in text_names)
    assert got["backbone.language_backbone.encoder.ln_final.weight"][1] == 0.0
    others = [n for n in got if not n.startswith("backbone.")]
    assert any(n.startswith("transformer.decoder.") for n in others)
    assert all(got[n][0] == pytest.approx(rest) for n in others)
    assert all(got[n][1] == 0.0 for n in got if n.endswith(".bias"))
    assert not any(n.startswith("segmentation_head.") for n in got)


def test_schedule_epochs_and_step_settings(recipe, export):
    cfg = apply_max_epochs(recipe("roboflow_ft.yaml"))
    # 20 epochs of the 7 training images (fewer than the 100 of the official subset) at 2 per batch
    assert cfg.SOLVER.MAX_ITER == 20 * (7 // 2)
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = 1000  # the official run: 100 images, 2 GPUs x 1, 20 epochs
    model = build_model(cfg)
    scheduler = build_lr_scheduler(cfg, build_optimizer(cfg, model))
    # official InverseSquareRootParamScheduler(8e-5, warmup 20, cooldown 20, timescale 20) at step / 1000
    expected = {0: 0.0, 10: 4e-5, 20: 8e-5, 80: 4e-5, 980: 8e-5 / 7.0, 990: 8e-5 / 49.5**0.5 * 0.5}
    for step, lr in expected.items():
        assert scheduler._factor(step) * 8e-5 == pytest.approx(lr, rel=1e-9, abs=1e-15), step
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 0.1
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.DTYPE == "bfloat16"
    assert cfg.INPUT.FIND.NUM_NEGATIVES == -1 and cfg.INPUT.FIND.MAX_OBJECTS_PER_FIND == 200


def test_official_resize(recipe):
    cfg = recipe("roboflow_ft.yaml")
    train = build_augmentations(cfg, is_train=True)
    assert [type(a) for a in train] == [RandomSquareResize, RandomPadToSize]
    assert train[0].sizes == tuple(range(480, 1008, 32)) and train[1].size == 1008
    test = build_augmentations(cfg, is_train=False)
    assert len(test) == 1 and test[0].sizes == (1008,)


def test_boxes_only_by_default_masks_with_one_key(recipe):
    boxes = build_model(recipe("roboflow_ft.yaml"))
    assert boxes.segmentation_head is None
    assert "pred_masks" not in boxes.output_keys
    assert [type(f).__name__ for f in boxes.criterion.loss_fns_find] == ["Boxes", "IABCEMdetr"]
    masks = build_model(recipe("roboflow_ft.yaml", "MODEL.SAM3.ENABLE_SEGMENTATION", True))
    assert masks.segmentation_head is not None and "pred_masks" in masks.output_keys
    assert [type(f).__name__ for f in masks.criterion.loss_fns_find] == ["Boxes", "IABCEMdetr", "Masks"]
    # a checkpoint of the segmentation model loads into the boxes-only one with its head set aside
    state, set_aside = boxes.convert_weights({"detector." + k: v for k, v in masks.state_dict().items()})
    assert set_aside and all(k.startswith("detector.segmentation_head.") for k in set_aside)
    boxes.load_state_dict(state, strict=True)


def test_odinw_variant(recipe):
    cfg = apply_max_epochs(recipe("odinw_ft.yaml"))
    assert cfg.MODEL.CRITERION.SAM3.IABCE.POS_WEIGHT == 5.0
    assert cfg.SOLVER.MAX_EPOCHS == 40 and cfg.SOLVER.MAX_ITER == 40 * (7 // 2)
    assert cfg.DATASETS.TRAIN == ("odinw_train",) and cfg.SOLVER.BASE_LR == 8e-5
