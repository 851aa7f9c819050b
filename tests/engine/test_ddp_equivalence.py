"""Two Gloo processes on CPU (``launch``) against one process that sees the union of their
batches: same parameters after the steps (float tolerance), the same weights on both ranks,
a "global" loss normalizer averaged through ``comm``, accumulation under DDP ``no_sync``, and
the validation loss gathered from both ranks."""

import os
import sys

import pytest
import torch

from segtrain.engine.launch import launch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _engine_ddp_worker as worker  # noqa: E402  (importable by name in the spawned processes)

ATOL = 1e-6


def _close(a, b, atol=ATOL):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    launch(worker.run, 2, dist_url="auto", args=(str(out),))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.slow
def test_comm_collectives(two_ranks):
    for r, res in enumerate(two_ranks):
        assert res["world"] == 2
        assert res["mean_of_rank_plus_one"] == pytest.approx(1.5)
        assert res["gathered"] == [0, 1]


@pytest.mark.slow
def test_ddp_step_equals_single_process_on_union(two_ranks):
    single, single_losses = worker.train_plain(0, 1)
    (p0, logged), (p1, _) = two_ranks[0]["plain"], two_ranks[1]["plain"]
    assert _close(p0, p1, atol=0)  # both ranks hold the same weights
    assert _close(p0, single), (p0, single)
    init = worker.CountNormalizedRegression().state_dict()
    assert not _close(single, init, atol=1e-3)  # the steps did move the weights
    # rank 0 logs the loss averaged over processes, which is the loss of the union batch
    assert logged == pytest.approx(single_losses, abs=1e-6)


@pytest.mark.slow
def test_global_normalizer_matters(two_ranks):
    """The per-sample target counts differ between the two halves of each batch, so a
    per-process normalizer (no all-reduce) would train different weights."""
    batches = worker.shard_batches(worker.samples(4 * worker.STEPS, equal_counts=False), 4, 0, 1)
    counts = [(sum(len(d["y"]) for d in b[:2]), sum(len(d["y"]) for d in b[2:])) for b in batches]
    assert any(a != b for a, b in counts), counts
    local, _ = worker.train_plain(0, 1, local=True)
    assert not _close(local, two_ranks[0]["plain"][0], atol=1e-4)


@pytest.mark.slow
def test_ddp_accumulation_equals_single_big_batch(two_ranks):
    """2 processes x 2 micro-steps of 1 sample (gradient sync only on the 2nd) == 1 process,
    batch 4, no accumulation; AdamW and full-model clipping included."""
    single = worker.train_accumulated(0, 1, accum_iter=1)
    a0, a1 = two_ranks[0]["accumulated"], two_ranks[1]["accumulated"]
    assert _close(a0, a1, atol=0)
    assert _close(a0, single), (a0, single)


@pytest.mark.slow
def test_validation_loss_weighted_over_ranks(two_ranks):
    for res in two_ranks:
        assert res["val"]["core_loss"] == pytest.approx(2.0) and res["val"]["total_loss"] == pytest.approx(2.0)


@pytest.mark.slow
def test_non_finite_loss_on_one_rank_stops_every_rank(two_ranks):
    r0, r1 = two_ranks[0]["non_finite"], two_ranks[1]["non_finite"]
    assert r0["iter"] == r1["iter"] == 1
    core = float(torch.tensor(2.0 * 0.8))  # w = 0.8 after iteration 0's step, in float32
    assert r1["error"] == f"non-finite loss at iteration 1: loss_aux=nan (core_loss={core})"
    assert r0["error"] == (
        f"non-finite loss at iteration 1: a loss on another process (rank 0 is finite) (core_loss={core})"
    )
    assert r0["w"] == r1["w"] == pytest.approx(0.8)  # iteration 0 stepped, iteration 1 did not
