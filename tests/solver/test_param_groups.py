"""Parameter groups: LR multipliers by name pattern, layer-wise LR decay over a trunk's blocks,
no weight decay by name pattern and by norm class, as the SAM 2.1 / SAM 3 recipes set them."""

import pytest
import torch
from torch import nn

from segtrain.config import get_cfg
from segtrain.solver import build_optimizer
from segtrain.utils.errors import ConfigError


class LayerNorm2d(nn.Module):
    """A channels-first norm that is not ``torch.nn.LayerNorm`` (as in SAM 2's neck)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Linear(2, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
        self.norm = nn.LayerNorm(4)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.trunk = Trunk()
        self.image_encoder.neck = LayerNorm2d(4)
        self.head = nn.Linear(4, 2)


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "AdamW"
    cfg.SOLVER.BASE_LR = 5e-6
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_EMBED, cfg.SOLVER.WEIGHT_DECAY_NORM = 0.1, 0.1, 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM_TYPES = ["LayerNorm"]
    cfg.SOLVER.NO_WEIGHT_DECAY_NAMES = ["*bias*"]
    cfg.SOLVER.LR_MULTIPLIERS = [["image_encoder.*", 0.6]]
    cfg.SOLVER.LAYER_DECAY.VALUE = 0.9
    cfg.SOLVER.LAYER_DECAY.APPLY_TO = "image_encoder.trunk"
    cfg.SOLVER.LAYER_DECAY.OVERRIDES = [["*pos_embed*", 1.0]]
    for key, value in solver.items():
        node = cfg.SOLVER
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def _lr_wd(optimizer, model):
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    return {n: by_param[id(p)] for n, p in model.named_parameters()}


def test_sam2_recipe_groups():
    """3 blocks: block i learns at 0.9 ** (3 - i) of the vision rate (3e-6 = 0.6 x 5e-6), the
    patch embedding at 0.9 ** 4, the trunk's top (its final norm) at 1, pos_embed at 1 (the
    override); the neck at the vision rate, the head at 5e-6. No weight decay on any bias and on
    LayerNorm weights; LayerNorm2d's weight (not a torch LayerNorm) and pos_embed decay."""
    model = Model()
    got = _lr_wd(build_optimizer(_cfg(), model), model)
    vision = 3e-6
    expected = {
        "image_encoder.trunk.patch_embed.weight": (vision * 0.9**4, 0.1),
        "image_encoder.trunk.patch_embed.bias": (vision * 0.9**4, 0.0),
        "image_encoder.trunk.pos_embed": (vision, 0.1),
        "image_encoder.trunk.norm.weight": (vision, 0.0),
        "image_encoder.trunk.norm.bias": (vision, 0.0),
        "image_encoder.neck.weight": (vision, 0.1),
        "image_encoder.neck.bias": (vision, 0.0),
        "head.weight": (5e-6, 0.1),
        "head.bias": (5e-6, 0.0),
    }
    for i in range(3):
        expected[f"image_encoder.trunk.blocks.{i}.weight"] = (vision * 0.9 ** (3 - i), 0.1)
        expected[f"image_encoder.trunk.blocks.{i}.bias"] = (vision * 0.9 ** (3 - i), 0.0)
    assert set(got) == set(expected)
    for name, (lr, wd) in expected.items():
        assert got[name][0] == pytest.approx(lr, rel=1e-12), name
        assert got[name][1] == wd, name


def test_trunk_get_layer_id_is_used_when_present():
    model = Model()
    model.image_encoder.trunk.get_num_layers = lambda: 3
    model.image_encoder.trunk.get_layer_id = lambda name: 4 if "blocks.0." in name else 0
    got = _lr_wd(build_optimizer(_cfg(**{"LAYER_DECAY.OVERRIDES": []}), model), model)
    assert got["image_encoder.trunk.blocks.0.weight"][0] == pytest.approx(3e-6)
    assert got["image_encoder.trunk.blocks.1.weight"][0] == pytest.approx(3e-6 * 0.9**4)


def test_defaults_keep_the_detectron2_groups():
    """Without the new keys: every norm layer (LayerNorm2d too) and embedding without decay,
    backbone multiplier only under backbone."""
    model = Model()
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = 1e-4, 0.05
    got = _lr_wd(build_optimizer(cfg, model), model)
    assert got["image_encoder.neck.weight"] == (1e-4, 0.0)
    assert got["image_encoder.trunk.pos_embed"] == (1e-4, 0.0)
    assert got["head.bias"] == (1e-4, 0.05)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("LR_MULTIPLIERS", [["image_encoder.*"]], r"LR_MULTIPLIERS: each entry must be \[name_pattern, number\]"),
        ("LR_MULTIPLIERS", [["image_encoder.*", "fast"]], r"SOLVER.LR_MULTIPLIERS: 'fast' in .* is not a number"),
        ("LAYER_DECAY.APPLY_TO", "image_encoder.trunks", r"APPLY_TO: the model has no module 'image_encoder.trunks'"),
        ("LAYER_DECAY.APPLY_TO", "head", r"module 'head' \(Linear\) has no 'blocks' list"),
    ],
)
def test_bad_settings_are_one_line_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        build_optimizer(_cfg(**{key: value}), Model())
