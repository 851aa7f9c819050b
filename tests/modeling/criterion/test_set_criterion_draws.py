"""SetCriterion's batched path draws its random points on a helper thread (CPU, > 1 torch
thread) with the same numbers, hence the same losses, as drawing them inline."""
import pytest
import torch

from segtrain.modeling.criterion import CORE_LOSS_KEY, SetCriterion
from segtrain.modeling.criterion.set_criterion import _DrawsInOrder
from segtrain.modeling.matcher import HungarianMatcher


def _inputs(B=2, Q=7, K=3, n_aux=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {"pred_logits": torch.randn(B, Q, K + 1, generator=g, requires_grad=True),
                "pred_masks": torch.randn(B, Q, 6, 6, generator=g, requires_grad=True)}

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    targets = [{"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 24, 24, generator=g) > 0.5},
               {"labels": torch.tensor([1]), "masks": torch.rand(1, 24, 24, generator=g) > 0.5}]
    return out, targets


def _crit():
    return SetCriterion(3, HungarianMatcher(2.0, 5.0, 5.0, num_points=30),
                        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, 0.1, ["labels", "masks"], 40, 3.0, 0.75)


def test_background_draws_equal_inline():
    out, targets = _inputs()
    results = []
    threads = torch.get_num_threads()
    try:
        for background in (False, True):
            crit = _crit()
            crit.background_draws = background
            torch.set_num_threads(2)
            torch.manual_seed(3)
            losses = crit(out, targets)
            after = torch.rand(3)  # the generator is left in the same state too
            results.append((losses, after))
    finally:
        torch.set_num_threads(threads)
    (a, ra), (b, rb) = results
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(ra, rb)
    assert a[CORE_LOSS_KEY].item() > 0


def test_draws_in_order_propagates_errors():
    def coords(l):
        if l == 2:
            raise RuntimeError("draw failed")
        return torch.full((1,), float(l))

    for background in (False, True):
        d = _DrawsInOrder(4, coords, lambda l: None, background)
        assert d[1].item() == 1.0 and len(d) == 4
        with pytest.raises(RuntimeError, match="draw failed"):
            d[2]
        with pytest.raises(RuntimeError, match="draw failed"):
            d.wait_all()
