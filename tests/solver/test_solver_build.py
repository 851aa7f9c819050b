"""Optimizer param groups, gradient clipping, frozen modules, parameter counts."""

import pytest
import torch
from torch import nn

from segtrain.config import get_cfg
from segtrain.solver import build_gradient_clipper, build_optimizer, count_parameters, freeze_modules
from segtrain.utils.errors import ConfigError


class FrozenBatchNorm2dLike(nn.Module):
    """A custom norm layer (class name contains "Norm") that has parameters."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.query_feat = nn.Embedding(5, 4)
        self.level_embed = nn.Parameter(torch.zeros(3, 4))
        self.pos_embed = nn.Parameter(torch.zeros(2, 4))
        self.decoder_norm = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.class_embed = nn.Linear(4, 3)  # "embed" in the name but a plain layer: decays
        self.post_proj = nn.Linear(4, 4)  # "post" is not "pos"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), FrozenBatchNorm2dLike(4))
        self.head = Head()
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.BACKBONE_MULTIPLIER = 1e-3, 0.05, 0.1
    cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0, 0.0
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _hyper(opt, model):
    """{param name: (lr, weight_decay)} from the optimizer's groups."""
    by_id = {}
    for g in opt.param_groups:
        for p in g["params"]:
            assert id(p) not in by_id, "a parameter is in two groups"
            by_id[id(p)] = (g["lr"], g["weight_decay"])
    return {n: by_id.get(id(p)) for n, p in model.named_parameters()}


def test_param_groups_lr_and_decay():
    model = Net()
    opt = build_optimizer(_cfg(), model)
    assert isinstance(opt, torch.optim.AdamW)
    h = _hyper(opt, model)
    assert h["backbone.0.weight"] == pytest.approx((1e-4, 0.05))  # backbone x0.1, decays
    assert h["backbone.1.weight"] == pytest.approx((1e-4, 0.0))  # BatchNorm
    assert h["backbone.2.bias"] == pytest.approx((1e-4, 0.0))  # custom *Norm* class
    assert h["head.query_feat.weight"] == pytest.approx((1e-3, 0.0))  # nn.Embedding
    assert h["head.level_embed"] == pytest.approx((1e-3, 0.0))
    assert h["head.pos_embed"] == pytest.approx((1e-3, 0.0))
    assert h["head.decoder_norm.weight"] == pytest.approx((1e-3, 0.0))
    assert h["head.gn.bias"] == pytest.approx((1e-3, 0.0))
    assert h["head.class_embed.weight"] == pytest.approx((1e-3, 0.05))
    assert h["head.post_proj.weight"] == pytest.approx((1e-3, 0.05))
    assert h["frozen.weight"] is None and h["frozen.bias"] is None  # frozen params skipped


def test_nonzero_norm_and_embed_decay_and_sgd():
    model = Net()
    opt = build_optimizer(_cfg(OPTIMIZER="SGD", WEIGHT_DECAY_NORM=0.01, WEIGHT_DECAY_EMBED=0.02), model)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    h = _hyper(opt, model)
    assert h["backbone.1.bias"][1] == 0.01 and h["head.query_feat.weight"][1] == 0.02


def test_unknown_optimizer():
    with pytest.raises(ConfigError, match="'Adamw'.*AdamW, Adam, SGD"):
        build_optimizer(_cfg(OPTIMIZER="Adamw"), Net())


def _grads(model, values):
    for p, v in zip(model.parameters(), values):
        p.grad = v.clone()


def _clip_cfg(clip_type, value):
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    return cfg


def test_clip_value():
    model = nn.Linear(2, 1)
    _grads(model, [torch.tensor([[3.0, -0.5]]), torch.tensor([-4.0])])
    build_gradient_clipper(_clip_cfg("value", 1.0))(model.parameters())
    assert torch.equal(model.weight.grad, torch.tensor([[1.0, -0.5]]))
    assert torch.equal(model.bias.grad, torch.tensor([-1.0]))


def test_clip_norm_per_parameter_vs_full_model():
    # weight grad norm 5, bias grad norm 0.5; clip at 1
    model = nn.Linear(2, 1)
    _grads(model, [torch.tensor([[3.0, 4.0]]), torch.tensor([0.5])])
    build_gradient_clipper(_clip_cfg("norm", 1.0))(model.parameters())
    assert torch.allclose(model.weight.grad, torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(model.bias.grad, torch.tensor([0.5]))  # already under: untouched

    _grads(model, [torch.tensor([[3.0, 4.0]]), torch.tensor([0.5])])
    total = build_gradient_clipper(_clip_cfg("full_model", 1.0))(model.parameters())
    full = (25 + 0.25) ** 0.5
    assert float(total) == pytest.approx(full)
    assert torch.allclose(model.weight.grad, torch.tensor([[3.0, 4.0]]) / full, atol=1e-6)
    assert torch.allclose(model.bias.grad, torch.tensor([0.5]) / full, atol=1e-6)


def test_clipping_disabled_and_unknown_type():
    assert build_gradient_clipper(get_cfg()) is None
    with pytest.raises(ConfigError, match="'l2'.*value, norm, full_model"):
        build_gradient_clipper(_clip_cfg("l2", 1.0))


def test_freeze_modules_and_counts():
    model = Net()
    frozen = freeze_modules(model, ["backbone.1", "head.query_feat"])
    assert frozen == ["backbone.1.bias", "backbone.1.weight", "head.query_feat.weight"]
    assert not model.backbone[1].weight.requires_grad and model.backbone[0].weight.requires_grad
    counts = count_parameters(model)
    assert counts["total"] - counts["trainable"] == 4 + 4 + 20 + 6  # bn, embedding, the frozen Linear
    names = {n for g in build_optimizer(_cfg(), model).param_groups for n in g["params"]}
    assert model.backbone[1].weight not in names


def test_freeze_unknown_prefix_is_one_line_error():
    with pytest.raises(ConfigError) as e:
        freeze_modules(Net(), ["backbone.res2"])
    assert "'backbone.res2'" in str(e.value) and "MODEL.FROZEN_MODULES" in str(e.value) and "\n" not in str(e.value)
    # a prefix must match whole name parts: "head.gn" must not freeze "head.gn2..." style names
    with pytest.raises(ConfigError):
        freeze_modules(Net(), ["head.g"])
