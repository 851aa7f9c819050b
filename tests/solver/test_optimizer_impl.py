"""build_optimizer's fused Adam/AdamW kernel gives the plain per-tensor loop's updates."""

import copy

import pytest
import torch
from torch import nn

from segtrain.config import get_cfg
from segtrain.solver import build_optimizer
from segtrain.solver.build import adam_impl_kwargs


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


@pytest.mark.parametrize("name", ["AdamW", "Adam"])
def test_fused_matches_plain_loop(name):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = name
    cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM = 1e-2, 0.05, 0.0
    model = _model()
    plain_model = copy.deepcopy(model)
    opt = build_optimizer(cfg, model)
    assert opt.defaults.get("fused") == adam_impl_kwargs(opt.param_groups).get("fused")
    # the same groups (lr, weight decay) over the copy's parameters, with the per-tensor loop
    index = {id(p): i for i, p in enumerate(model.parameters())}
    copies = list(plain_model.parameters())
    plain_groups = [
        {"params": [copies[index[id(p)]] for p in g["params"]], "lr": g["lr"], "weight_decay": g["weight_decay"]}
        for g in opt.param_groups
    ]
    plain = type(opt)(plain_groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS), foreach=False)
    assert not plain.defaults.get("fused")
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        for m, o in ((model, opt), (plain_model, plain)):
            o.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
            o.step()
    initial = _model().state_dict()
    moved = 0.0
    for (n, p), q in zip(model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)
        moved += float((p.detach() - initial[n]).abs().sum())
    assert moved > 0  # the steps did change the weights


def test_fused_only_for_supported_params():
    p = nn.Parameter(torch.zeros(3))
    assert adam_impl_kwargs([{"params": [p]}]) in ({"fused": True}, {})
    assert adam_impl_kwargs([{"params": []}]) == {}
    assert adam_impl_kwargs([{"params": [torch.zeros(3, dtype=torch.int64)]}]) == {}
