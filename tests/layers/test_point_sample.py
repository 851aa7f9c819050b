"""point_sample and uncertainty-based point selection."""

import torch

from segtrain.layers.point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    select_uncertain_grid_points,
    select_uncertain_point_coords,
    topk_indices_unordered,
)


def test_point_sample_hand():
    """2x2 image [[0,1],[2,3]], align_corners=False: pixel centers are at 0.25 / 0.75.
    (x=.25,y=.25) -> 0, (.75,.25) -> 1, (.25,.75) -> 2, (.5,.5) -> mean 1.5."""
    img = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    coords = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5]]])
    out = point_sample(img, coords)
    assert out.shape == (1, 1, 4)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0, 2.0, 1.5]))


def test_point_sample_grid_shape_and_mixed_dtype():
    img = torch.randn(2, 3, 5, 5, dtype=torch.float16)
    out = point_sample(img, torch.rand(2, 4, 6, 2))
    assert out.shape == (2, 3, 4, 6)


def test_point_sample_gradcheck():
    img = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    # keep points away from pixel centers/edges, where bilinear sampling is not differentiable in the coords
    coords = (torch.rand(1, 5, 2, dtype=torch.float64) * 0.6 + 0.2 + 0.013).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: point_sample(a, c), (img, coords))


def test_uncertain_points_rng_order_and_selection():
    """Draw order: rand(N, S, 2), then rand(N, R, 2); the kept points are the S candidates
    with the smallest |logit|, by topk."""
    logits = torch.linspace(-3, 3, 8).view(1, 1, 1, 8).expand(2, 1, 8, 8).contiguous()
    torch.manual_seed(0)
    out = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 10, 3.0, 0.75)
    assert out.shape == (2, 10, 2)
    torch.manual_seed(0)
    over = torch.rand(2, 30, 2)
    extra = torch.rand(2, 3, 2)
    unc = calculate_uncertainty(point_sample(logits, over))[:, 0]
    idx = unc.topk(7, dim=1)[1]
    expected = torch.cat([torch.gather(over, 1, idx[..., None].expand(2, 7, 2)), extra], 1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # the kept points are the most uncertain candidates
    kept = calculate_uncertainty(point_sample(logits, out[:, :7]))[:, 0]
    assert (kept.min(1).values >= unc.topk(7, dim=1).values.min(1).values - 1e-6).all()


def test_uncertain_points_ratio_edges():
    logits = torch.randn(3, 1, 6, 6)
    torch.manual_seed(1)
    out = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 5, 1.0, 1.0)
    assert out.shape == (3, 5, 2) and ((out >= 0) & (out <= 1)).all()
    out = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 5, 2.0, 0.0)
    assert out.shape == (3, 5, 2)


def test_select_uncertain_grid_points_equals_per_group_selection():
    """Groups of rows, grid coordinates out: per row the same candidates as
    select_uncertain_point_coords (as a set), then the random points; the values sampled at
    them equal point_sample at the [0, 1] coordinates bit for bit."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 1, 9, 11, generator=g)
    groups = [3, 4]
    overs = [torch.rand(n, 40, 2, generator=g) for n in groups]
    rands = [torch.rand(n, 5, 2, generator=g) for n in groups]
    over_all, rand_all = torch.cat(overs), torch.cat(rands)
    expected = select_uncertain_point_coords(logits, calculate_uncertainty, over_all, 12, rand_all)  # [7, 17, 2]
    grid = select_uncertain_grid_points(logits, overs, 12, rands)
    assert grid.shape == (7, 17, 2)
    for i in range(7):  # the uncertain part: the same set of candidates, any order
        a = sorted(map(tuple, ((expected[i, :12] * 2.0) - 1.0).tolist()))
        b = sorted(map(tuple, grid[i, :12].tolist()))
        assert a == b
    assert torch.equal(grid[:, 12:], (rand_all * 2.0) - 1.0)
    vals = torch.nn.functional.grid_sample(logits, grid.unsqueeze(2), align_corners=False)[..., 0]
    ref = point_sample(logits, (grid + 1.0) / 2.0)  # same points (exact: * 2 and / 2 are exact here)
    torch.testing.assert_close(vals, ref, rtol=0, atol=1e-6)
    # the inputs became grid coordinates in place
    torch.testing.assert_close(torch.cat(overs), over_all * 2.0 - 1.0, rtol=0, atol=0)


def test_select_uncertain_grid_points_row_count_mismatch():
    import pytest

    with pytest.raises(ValueError, match="cover 2 rows, coarse_logits has 3"):
        select_uncertain_grid_points(torch.randn(3, 1, 4, 4), [torch.rand(2, 8, 2)], 2, [None])


def _index_sets(idx):
    return [sorted(row) for row in idx.tolist()]


def test_topk_indices_unordered_is_topks_set():
    """The same set of indices per row as torch.topk for every k (numpy's introselect on the
    CPU), float32 and float64; k = 0 gives [N, 0]."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        values = torch.randn(5, 300, generator=g).to(dtype)
        for k in (1, 2, 75, 299, 300):
            got = topk_indices_unordered(values, k)
            assert got.shape == (5, k) and got.dtype == torch.int64
            assert _index_sets(got) == _index_sets(torch.topk(values, k, dim=1)[1])
    assert topk_indices_unordered(torch.randn(3, 10), 0).shape == (3, 0)


def test_topk_indices_unordered_takes_nan_first_like_topk():
    """topk ranks NaN above every number; so does the CPU selection (a NaN logit is the most
    uncertain point, and the loss at it is NaN, as in the official code)."""
    values = torch.tensor([[0.5, float("nan"), -1.0, 2.0, float("nan"), 0.0]])
    got = _index_sets(topk_indices_unordered(values, 3))
    assert got == _index_sets(torch.topk(values, 3, dim=1)[1]) == [[1, 3, 4]]


def test_select_uncertain_grid_points_float64_gathers_the_same_points():
    """float64 coordinates take the general gather (float32 pairs are gathered as 8-byte words):
    the same candidate sets as the float32 call on the same numbers."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 6, 7, generator=g)
    over = torch.rand(4, 30, 2, generator=g)
    grid32 = select_uncertain_grid_points(logits, [over.clone()], 9, [None])
    grid64 = select_uncertain_grid_points(logits.double(), [over.double()], 9, [None])
    assert grid64.dtype == torch.float64
    for i in range(4):
        assert sorted(map(tuple, grid32[i].tolist())) == sorted(map(tuple, grid64[i].float().tolist()))
