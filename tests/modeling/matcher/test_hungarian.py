"""HungarianMatcher: optimality (brute force), batched == the per-image reference loop
(tests/reference), RNG, autocast, errors."""

import itertools

import numpy as np
import pytest
import torch

from segtrain.config import get_cfg
from segtrain.layers.losses import batch_dice_loss, batch_sigmoid_ce_loss
from segtrain.layers.point_sample import point_sample
from segtrain.modeling.matcher import MATCHER_REGISTRY, HungarianMatcher, build_matcher
from segtrain.modeling.matcher import hungarian as hungarian_mod
from segtrain.utils.errors import NonFiniteLossError
from tests.reference.hungarian import hungarian_match_per_image


def _outputs(B, Q, K, h, w, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "pred_logits": torch.randn(B, Q, K + 1, generator=g).to(dtype),
        "pred_masks": (3 * torch.randn(B, Q, h, w, generator=g)).to(dtype),
    }


def _targets(sizes, K, H, W, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(0, K, (n,), generator=g), "masks": torch.rand(n, H, W, generator=g) > 0.5}
        for n in sizes
    ]


def _cost_matrix(m, out, tgt, b, coords):
    """The docs/losses.md cost for image b, written out (float64)."""
    prob = out["pred_logits"][b].double().softmax(-1)
    cc = -prob[:, tgt["labels"]]
    om, tm = out["pred_masks"][b].double()[:, None], tgt["masks"].double()[:, None]
    c = coords[b : b + 1].double()
    op = point_sample(om, c.repeat(om.shape[0], 1, 1)).squeeze(1)
    tp = point_sample(tm, c.repeat(tm.shape[0], 1, 1)).squeeze(1)
    return m.cost_mask * batch_sigmoid_ce_loss(op, tp) + m.cost_class * cc + m.cost_dice * batch_dice_loss(op, tp)


@pytest.mark.parametrize("Q,n", [(4, 3), (4, 4), (3, 4), (5, 1)])
def test_optimal_vs_brute_force(Q, n):
    m = HungarianMatcher(2, 5, 5, num_points=30)
    out = _outputs(1, Q, 3, 6, 6, seed=Q * 10 + n)
    tgt = _targets([n], 3, 8, 8, seed=n)
    torch.manual_seed(0)
    coords = m.draw_point_coords(1)
    ((qi, ti),) = m(out, tgt, point_coords=coords)
    assert qi.dtype == ti.dtype == torch.int64 and len(qi) == min(Q, n)
    C = _cost_matrix(m, out, tgt[0], 0, coords).numpy()
    got = C[qi.numpy(), ti.numpy()].sum()
    best = np.inf
    k = min(Q, n)
    for rows in itertools.permutations(range(Q), k):
        for cols in itertools.permutations(range(n), k) if n > Q else [tuple(range(n))]:
            best = min(best, C[list(rows), list(cols)].sum())
    assert got == pytest.approx(best, rel=1e-5, abs=1e-6)
    assert len(set(qi.tolist())) == len(qi) and len(set(ti.tolist())) == len(ti)


def test_batched_equals_per_image_and_match_many():
    m = HungarianMatcher(2, 5, 5, num_points=50)
    outs = [_outputs(3, 7, 4, 8, 8, seed=s) for s in range(3)]
    tgt = _targets([2, 0, 5], 4, 16, 16)
    torch.manual_seed(3)
    many = m.match_many(outs, tgt)
    torch.manual_seed(3)
    single = [m(o, tgt) for o in outs]
    torch.manual_seed(3)
    ref = [hungarian_match_per_image(m, o, tgt) for o in outs]
    for a, b, c in zip(many, single, ref):
        for (qa, ta), (qb, tb), (qc, tc) in zip(a, b, c):
            assert torch.equal(qa, qb) and torch.equal(ta, tb) and torch.equal(qa, qc) and torch.equal(ta, tc)
    assert many[0][1][0].numel() == 0 and many[0][1][0].dtype == torch.int64  # empty GT image
    torch.manual_seed(3)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(m(outs, tgt)[2], many[2]))  # list input to forward


def test_cost_matrices_are_what_match_many_solves():
    """cost_matrices: the docs/losses.md cost of every (output, image), padded to the largest n_b,
    drawn with the same RNG consumption as match_many, whose assignments solve it."""
    from scipy.optimize import linear_sum_assignment

    m = HungarianMatcher(2, 5, 5, num_points=30)
    outs = [_outputs(2, 5, 3, 6, 6, seed=s) for s in range(2)]
    tgt = _targets([3, 0], 3, 8, 8)
    torch.manual_seed(0)
    C, sizes = m.cost_matrices(outs, tgt)
    assert C.shape == (2, 2, 5, 3) and C.dtype == np.float32 and sizes == [3, 0]
    torch.manual_seed(0)
    coords = [m.draw_point_coords(2) for _ in outs]
    torch.manual_seed(0)
    many = m.match_many(outs, tgt)
    for l, out in enumerate(outs):
        expected = _cost_matrix(m, out, tgt[0], 0, coords[l]).float()
        torch.testing.assert_close(torch.from_numpy(C[l, 0]), expected, rtol=1e-5, atol=1e-5)
        i, j = linear_sum_assignment(C[l, 0])
        assert torch.equal(many[l][0][0], torch.as_tensor(i)) and torch.equal(many[l][0][1], torch.as_tensor(j))
        assert many[l][1][0].numel() == 0
    C0, sizes0 = m.cost_matrices(outs, _targets([0, 0], 3, 8, 8))
    assert C0.shape == (2, 2, 5, 0) and sizes0 == [0, 0]


def test_points_shared_within_image_fresh_per_call():
    """One set of num_points per image, shared by all masks; each call draws new points."""
    m = HungarianMatcher(num_points=16)
    torch.manual_seed(0)
    a = m.draw_point_coords(2)
    torch.manual_seed(0)
    expected = torch.cat([torch.rand(1, 16, 2), torch.rand(1, 16, 2)])
    torch.testing.assert_close(a, expected, rtol=0, atol=0)
    assert not torch.equal(m.draw_point_coords(2), m.draw_point_coords(2))


def test_full_resolution_when_num_points_zero():
    m = HungarianMatcher(1, 1, 1, num_points=0)
    out = _outputs(2, 5, 3, 8, 8)
    tgt = _targets([3, 2], 3, 8, 8)
    assert [len(i) for i, _ in m(out, tgt)] == [3, 2]
    ref = hungarian_match_per_image(m, out, tgt)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(m(out, tgt), ref))


def test_all_empty_targets():
    m = HungarianMatcher(1, 1, 1, num_points=8)
    res = m(_outputs(2, 4, 3, 4, 4), _targets([0, 0], 3, 4, 4))
    assert all(i.numel() == 0 and j.numel() == 0 for i, j in res)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_costs_float32_under_autocast(monkeypatch, dtype):
    seen = []
    real = hungarian_mod.linear_sum_assignment

    def spy(c):
        seen.append(c.dtype)
        return real(c)

    monkeypatch.setattr(hungarian_mod, "linear_sum_assignment", spy)
    m = HungarianMatcher(2, 5, 5, num_points=20)
    out = _outputs(2, 6, 3, 8, 8, dtype=dtype)
    tgt = _targets([2, 3], 3, 8, 8)
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.manual_seed(0)
            a = m(out, tgt)
    except RuntimeError as e:  # autocast dtype unsupported on this build
        pytest.skip(str(e))
    assert seen and all(d == np.float32 for d in seen)
    out32 = {k: v.float() for k, v in out.items()}
    torch.manual_seed(0)
    b = m(out32, tgt)
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize("key,term", [("pred_masks", "mask"), ("pred_logits", "class")])
def test_non_finite_cost_error(monkeypatch, key, term):
    called = []
    monkeypatch.setattr(hungarian_mod, "linear_sum_assignment", lambda c: called.append(1))
    m = HungarianMatcher(2, 5, 5, num_points=10)
    outs = [_outputs(2, 4, 3, 6, 6), _outputs(2, 4, 3, 6, 6, seed=5)]
    outs[1][key][1, 2] = float("nan")
    tgt = _targets([0, 2], 3, 6, 6)
    with pytest.raises(NonFiniteLossError) as e:
        m.match_many(outs, tgt, layer_names=["outputs", "aux_outputs[0]"])
    msg = str(e.value)
    assert "\n" not in msg and f"{term} cost" in msg and "image 1" in msg and "aux_outputs[0]" in msg
    assert not called
    with pytest.raises(NonFiniteLossError, match=f"{term} cost"):
        hungarian_match_per_image(m, outs[1], tgt)


def test_from_config_and_registry():
    cfg = get_cfg()
    m = build_matcher(cfg)
    assert isinstance(m, HungarianMatcher)
    assert (m.cost_class, m.cost_mask, m.cost_dice, m.num_points) == (2.0, 5.0, 5.0, 12544)
    assert MATCHER_REGISTRY.get("HungarianMatcher") is HungarianMatcher
    m2 = HungarianMatcher(3, 1)  # official positional order
    assert (m2.cost_class, m2.cost_mask, m2.cost_dice, m2.num_points) == (3, 1, 1, 0)


def test_gt_sampled_by_image_equals_per_gt_sampling():
    """On the CPU the matcher samples each image's GT masks as the channels of one
    channels-last grid_sample; the values equal per-GT point_sample bit for bit, zero rows
    padding the image with fewer GT (sizes 3 and 1, one image without GT)."""
    m = HungarianMatcher(1, 1, 1, num_points=50)
    tgt = _targets([3, 1, 0], 3, 20, 24)
    packed = hungarian_mod.pack_instance_targets(tgt)
    torch.manual_seed(0)
    coords = m.draw_point_coords(3)
    by_image = m._gt_by_image(packed)
    assert by_image.shape == (3, 3, 20, 24) and by_image.is_contiguous(memory_format=torch.channels_last)
    got = m._targets_of(packed, coords, by_image)
    ref = m._targets_of(packed, coords)
    assert got.shape == ref.shape == (3, 3, 50)
    assert torch.equal(got, ref)
    assert torch.equal(got[1, 1:], torch.zeros(2, 50)) and torch.equal(got[2], torch.zeros(3, 50))
    for b, t in enumerate(tgt):
        n = len(t["labels"])
        if n:
            expected = point_sample(t["masks"].float()[:, None], coords[b : b + 1].expand(n, -1, -1)).squeeze(1)
            assert torch.equal(got[b, :n], expected)


@pytest.mark.parametrize("costs", [(2, 5, 5), (1, 0, 3), (1, 4, 0)])
def test_point_chunks_equal_one_chunk_and_the_formulas(monkeypatch, costs):
    """The mask costs accumulated over chunks of points (CPU, one thread) equal the unchunked
    batch_sigmoid_ce_loss / batch_dice_loss to float round-off, and the assignments match."""
    m = HungarianMatcher(*costs, num_points=70)
    out = _outputs(2, 6, 3, 9, 9, seed=5)
    tgt = _targets([3, 4], 3, 20, 20)
    torch.manual_seed(0)
    coords = m.draw_point_coords(2)
    packed = hungarian_mod.pack_instance_targets(tgt)
    labels = packed.padded(packed.labels)
    tgt_pts = m._targets_of(packed, coords)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    results = {}
    for chunk in (0, 16, 64):  # one chunk, 5 chunks (the last of 6 points), 2 chunks
        monkeypatch.setattr(HungarianMatcher, "POINT_CHUNK", chunk)
        results[chunk] = m._cost(out, labels, tgt_pts, coords, packed)
        assert [len(i) for i, _ in m(out, tgt, point_coords=coords)] == [3, 4]
    ref_mask = ref_dice = None
    out_pts = point_sample(out["pred_masks"].float(), coords)  # [B, Q, P]
    if costs[1]:
        ref_mask = batch_sigmoid_ce_loss(out_pts, tgt_pts)
    if costs[2]:
        ref_dice = batch_dice_loss(out_pts, tgt_pts)
    for chunk, (total, _, cm, cd) in results.items():
        for got, ref in ((cm, ref_mask), (cd, ref_dice)):
            assert (got is None) == (ref is None)
            if ref is not None:
                torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(total, results[0][0], rtol=1e-6, atol=1e-6)
    assert torch.equal(
        results[0][2] if costs[1] else results[0][3], (ref_mask if costs[1] else ref_dice)
    )  # one chunk: the very same values
    monkeypatch.setattr(HungarianMatcher, "POINT_CHUNK", 16)
    torch.manual_seed(1)
    chunked = m(out, tgt)
    torch.manual_seed(1)
    for (qa, ta), (qb, tb) in zip(chunked, hungarian_match_per_image(m, out, tgt)):
        assert torch.equal(qa, qb) and torch.equal(ta, tb)
