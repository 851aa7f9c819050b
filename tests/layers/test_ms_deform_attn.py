"""Multi-scale deformable attention: the fast path and the official-algorithm reference
(tests/reference) against an explicit bilinear computation, gradients, and the module."""

import pytest
import torch

from segtrain.layers.ms_deform_attn import MSDeformAttn, ms_deform_attn_core
from tests.reference.ms_deform_attn import ReferenceMSDeformAttn, ms_deform_attn_reference


def dense_bilinear_reference(value, shapes, loc, attn):
    """Loops over levels / points: bilinear interpolation with zero padding,
    align_corners=False (pixel i covers [i, i+1), centre i + 0.5 in units of 1/W)."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    out = value.new_zeros(N, Lq, M, D)
    start = 0
    for lvl, (H, W) in enumerate(shapes):
        v = value[:, start : start + H * W].reshape(N, H, W, M, D)
        start += H * W
        for p in range(P):
            x = loc[:, :, :, lvl, p, 0] * W - 0.5  # [N, Lq, M]
            y = loc[:, :, :, lvl, p, 1] * H - 0.5
            x0, y0 = torch.floor(x), torch.floor(y)
            for dx in (0, 1):
                for dy in (0, 1):
                    xi, yi = x0 + dx, y0 + dy
                    wgt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
                    inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
                    xc, yc = xi.clamp(0, W - 1).long(), yi.clamp(0, H - 1).long()
                    n_idx = torch.arange(N).view(N, 1, 1).expand_as(xc)
                    m_idx = torch.arange(M).view(1, 1, M).expand_as(xc)
                    sampled = v[n_idx, yc, xc, m_idx]  # [N, Lq, M, D]
                    out = out + (attn[:, :, :, lvl, p] * wgt * inside)[..., None] * sampled
    return out.reshape(N, Lq, M * D)


def _inputs(shapes, N=2, Lq=5, M=2, D=3, P=3, dtype=torch.float64, seed=0, spread=(-0.4, 1.4)):
    g = torch.Generator().manual_seed(seed)
    S = sum(h * w for h, w in shapes)
    L = len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=dtype)
    lo, hi = spread
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype) * (hi - lo) + lo
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=dtype)
    return value, loc, attn


SHAPES = [(5, 7), (3, 2), (1, 4)]  # non-square levels, one a single row


@pytest.mark.parametrize("fn", [ms_deform_attn_core, ms_deform_attn_reference])
def test_matches_dense_bilinear(fn):
    value, loc, attn = _inputs(SHAPES)
    expected = dense_bilinear_reference(value, SHAPES, loc, attn)
    torch.testing.assert_close(fn(value, SHAPES, loc, attn), expected, rtol=1e-5, atol=1e-5)
    # float32 too, and spatial shapes as a tensor (as MSDeformAttn passes them)
    v32, l32, a32 = value.float(), loc.float(), attn.float()
    torch.testing.assert_close(fn(v32, torch.tensor(SHAPES), l32, a32), expected.float(), rtol=1e-5, atol=1e-5)


def test_points_outside_contribute_zero():
    shapes = [(4, 3)]
    value, loc, attn = _inputs(shapes)
    # completely outside (more than a pixel beyond every edge) -> exactly 0
    loc[..., 0] = torch.where(loc[..., 0] < 0.5, torch.full_like(loc[..., 0], -0.6), torch.full_like(loc[..., 0], 1.5))
    out = ms_deform_attn_core(value, shapes, loc, attn)
    assert out.abs().max() == 0
    # x = loc_x * W - 0.5 = -0.5: halfway between the zero padding and column 0, on row 0
    # (y = loc_y * H - 0.5 = 0), so the output is value[row 0, col 0] / 2
    loc2 = torch.tensor([0.0, 0.5 / 4], dtype=torch.float64).view(1, 1, 1, 1, 1, 2)
    v = torch.arange(12, dtype=torch.float64).view(1, 12, 1, 1) + 2.0
    out = ms_deform_attn_core(v, shapes, loc2, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out.view(()), torch.tensor(1.0, dtype=torch.float64))


def test_gradients_match_reference_and_flow():
    value, loc, attn = _inputs(SHAPES, seed=3, spread=(-0.1, 1.1))
    grads = []
    for fn in (ms_deform_attn_core, ms_deform_attn_reference):
        v, l, a = (t.clone().requires_grad_(True) for t in (value, loc, attn))
        out = fn(v, SHAPES, l, a)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
        (out * w).sum().backward()
        grads.append((v.grad, l.grad, a.grad))
    for g_fast, g_ref, name in zip(grads[0], grads[1], ("value", "locations", "weights")):
        assert g_fast.abs().sum() > 0, name
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-8, msg=name)


def test_gradcheck_small():
    value, loc, attn = _inputs([(3, 4), (2, 2)], N=1, Lq=2, M=2, D=2, P=2, seed=7, spread=(0.05, 0.95))
    for t in (value, loc, attn):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v, l, a: ms_deform_attn_core(v, [(3, 4), (2, 2)], l, a), (value, loc, attn), eps=1e-6, atol=1e-5
    )


def test_module_init_and_forward():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3)
    names = {n for n, _ in attn.named_parameters()}
    assert names == {
        f"{m}.{p}"
        for m in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
        for p in ("weight", "bias")
    }
    # initial offsets: head h points along angle 2*pi*h/4, point p at distance p + 1
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    torch.testing.assert_close(bias[1, 0, 2], torch.tensor([0.0, 3.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[2, 1, 0], torch.tensor([-1.0, 0.0]), atol=1e-6, rtol=0)
    assert attn.attention_weights.weight.abs().sum() == 0

    shapes = torch.tensor([[4, 6], [2, 3]])
    start = torch.tensor([0, 24])
    N, S, Lq = 2, 30, 7
    src = torch.randn(N, S, 32)
    query = torch.randn(N, Lq, 32, requires_grad=True)
    ref = torch.rand(N, Lq, 2, 2)
    out = attn(query, ref, src, shapes, start)
    assert out.shape == (N, Lq, 32)
    out.sum().backward()
    assert query.grad is not None and attn.sampling_offsets.weight.grad.abs().sum() > 0
    # padding positions never contribute
    mask = torch.zeros(N, S, dtype=torch.bool)
    mask[:, 24:] = True
    src2 = src.clone()
    src2[:, 24:] = 1e3
    torch.testing.assert_close(attn(query, ref, src, shapes, start, mask), attn(query, ref, src2, shapes, start, mask))
    # box reference points
    assert attn(query, torch.rand(N, Lq, 2, 4), src, shapes, start).shape == (N, Lq, 32)


def test_shape_errors():
    value, loc, attn = _inputs(SHAPES)
    with pytest.raises(ValueError):
        ms_deform_attn_core(value, SHAPES[:2], loc[:, :, :, :2], attn[:, :, :, :2])


@pytest.mark.parametrize("T", [500, 40000])  # int16 and int32 sort keys
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_grad_paths_equal(dtype, T):
    """The parallel sorted-CSR value gradient equals the COO product and a dense scatter,
    duplicates and untouched rows included, "auto" (sorted) at 1 and 2 threads."""
    from segtrain.layers.ms_deform_attn import value_grad

    g = torch.Generator().manual_seed(0)
    R, K, D = 300, 48, 4
    rows = torch.randint(0, T - 50, (R * K,), generator=g)  # the last 50 rows get nothing
    weights = torch.rand(R * K, generator=g, dtype=dtype)
    grad_out = torch.randn(R, D, generator=g, dtype=dtype)
    dense = torch.zeros(T, D, dtype=dtype).index_add_(0, rows, grad_out.repeat_interleave(K, 0) * weights[:, None])
    coo = value_grad(rows, weights, grad_out, K, T, path="coo")
    torch.testing.assert_close(coo, dense)
    torch.testing.assert_close(value_grad(rows, weights, grad_out, K, T, path="sorted"), coo)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.testing.assert_close(value_grad(rows, weights, grad_out, K, T), coo)
    finally:
        torch.set_num_threads(threads)
    assert (coo[-50:] == 0).all()
    with pytest.raises(ValueError, match="path"):
        value_grad(rows, weights, grad_out, K, T, path="nope")


def test_gradients_equal_on_both_value_grad_paths():
    from segtrain.layers import ms_deform_attn as msda

    value, loc, attn = _inputs(SHAPES, seed=4, spread=(-0.1, 1.1))
    grads = []
    for path in ("coo", "sorted"):
        msda.VALUE_GRAD_PATH = path
        try:
            v = value.clone().requires_grad_(True)
            ms_deform_attn_core(v, SHAPES, loc, attn).square().sum().backward()
        finally:
            msda.VALUE_GRAD_PATH = "auto"
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_gradients_equal_with_value_grad_path_argument():
    """``value_grad_path`` chooses the value gradient's algorithm per call, as VALUE_GRAD_PATH does."""
    from segtrain.layers import ms_deform_attn as msda

    value, loc, attn = _inputs(SHAPES, seed=4, spread=(-0.1, 1.1))
    grads = []
    for path in ("coo", "sorted"):
        v = value.clone().requires_grad_(True)
        ms_deform_attn_core(v, SHAPES, loc, attn, value_grad_path=path).square().sum().backward()
        grads.append(v.grad)
    assert grads[0].abs().sum() > 0 and msda.VALUE_GRAD_PATH == "auto"
    torch.testing.assert_close(grads[0], grads[1])
    with pytest.raises(ValueError, match="path"):
        ms_deform_attn_core(
            value.clone().requires_grad_(True), SHAPES, loc, attn, value_grad_path="nope"
        ).sum().backward()


def test_module_equals_reference_module_and_shapes_list_agree():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    shapes = torch.tensor([[4, 6], [2, 3]])
    src = torch.randn(2, 30, 16)
    query = torch.randn(2, 5, 16)
    ref = torch.rand(2, 5, 2, 2)
    fast = attn(query, ref, src, shapes, None)
    listed = attn(query, ref, src, shapes, None, spatial_shapes_list=[(4, 6), (2, 3)])
    reference = ReferenceMSDeformAttn.sharing(attn)
    assert {n for n, _ in reference.named_parameters()} == {n for n, _ in attn.named_parameters()}
    assert all(a is b for a, b in zip(reference.parameters(), attn.parameters()))
    torch.testing.assert_close(reference(query, ref, src, shapes, None), fast, rtol=1e-5, atol=1e-6)
    box = torch.rand(2, 5, 2, 4)
    torch.testing.assert_close(
        reference(query, box, src, shapes, None), attn(query, box, src, shapes, None), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(listed, fast)
