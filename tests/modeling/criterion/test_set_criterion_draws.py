"""SetCriterion draws every random number inline, before matching, in the per-prediction
loop's order: the same numbers (hence the same losses and the same generator state after
the call) as the reference loop (tests/reference), at one torch thread or two."""

import torch

from segtrain.modeling.criterion import CORE_LOSS_KEY, SetCriterion
from segtrain.modeling.criterion.mask_points import draw_in_loop_order
from segtrain.modeling.matcher import HungarianMatcher
from tests.reference.set_criterion import ReferenceSetCriterion


def _inputs(B=2, Q=7, K=3, n_aux=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {
            "pred_logits": torch.randn(B, Q, K + 1, generator=g, requires_grad=True),
            "pred_masks": torch.randn(B, Q, 6, 6, generator=g, requires_grad=True),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 24, 24, generator=g) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 24, 24, generator=g) > 0.5},
    ]
    return out, targets


def _crit():
    return SetCriterion(
        3,
        HungarianMatcher(2.0, 5.0, 5.0, num_points=30),
        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        0.1,
        ["labels", "masks"],
        40,
        3.0,
        0.75,
    )


def test_draws_equal_the_reference_loop_at_one_and_two_threads():
    out, targets = _inputs()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for crit in (_crit(), ReferenceSetCriterion.of(_crit())):
                torch.manual_seed(3)
                losses = crit(out, targets)
                results.append((n, type(crit).__name__, losses, torch.rand(3)))
    finally:
        torch.set_num_threads(threads)
    (_, _, a, ra) = results[0]
    assert a[CORE_LOSS_KEY].item() > 0
    for n, name, b, rb in results[1:]:
        assert torch.equal(ra, rb), (n, name)  # the generator is left in the same state
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6, msg=f"{k} ({n} threads, {name})")


def test_draw_in_loop_order():
    """Per prediction: the matcher's per-image points, then the oversampled and random mask points."""
    matcher = HungarianMatcher(num_points=4)
    torch.manual_seed(0)
    coords, overs, extras = draw_in_loop_order(matcher, 2, 3, 5, 6, 2, torch.device("cpu"))
    torch.manual_seed(0)
    for l in range(2):
        torch.testing.assert_close(coords[l], torch.cat([torch.rand(1, 4, 2) for _ in range(3)]), rtol=0, atol=0)
        torch.testing.assert_close(overs[l], torch.rand(5, 6, 2), rtol=0, atol=0)
        torch.testing.assert_close(extras[l], torch.rand(5, 2, 2), rtol=0, atol=0)
    torch.manual_seed(0)
    coords, overs, extras = draw_in_loop_order(matcher, 2, 3, 0, 6, 0, torch.device("cpu"))
    assert len(coords) == 2 and overs == [] and extras == []
    torch.manual_seed(0)
    torch.testing.assert_close(coords[1][0], torch.cat([torch.rand(1, 4, 2) for _ in range(4)])[3], rtol=0, atol=0)
    torch.manual_seed(0)
    _, _, extras = draw_in_loop_order(matcher, 1, 3, 5, 6, 0, torch.device("cpu"))
    assert extras == [None]
