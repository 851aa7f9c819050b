"""Worker of tests/engine/test_ddp_equivalence.py, run in 2 Gloo processes by ``launch``; the
same functions run the single-process references in the test itself.

``CountNormalizedRegression`` normalizes its loss by a "global" target count averaged over
processes through ``comm.all_reduce_mean``, as the Mask2Former / SAM 3 / SAM 2 criteria do.
"""

import os
from typing import Dict, List

import torch
from torch import nn

from segtrain.engine.defaults import create_ddp_model
from segtrain.engine.hooks import ValidationLoss
from segtrain.engine.train_loop import SimpleTrainer
from segtrain.solver import make_gradient_clipper
from segtrain.utils import comm

STEPS = 3  # optimizer steps of the plain run
ACCUM_STEPS = 2  # optimizer steps of the accumulation run


class CountNormalizedRegression(nn.Module):
    """Batch: list of {"x": [3], "y": [k]} (k targets per sample, k varies). No batch-dependent
    layer. core_loss = sum over every target of (w.x + b - y)^2 / num_targets, where
    num_targets is this process's count averaged over processes ("global" normalization);
    ``local=True`` divides each half-batch by its own count instead (what a criterion that skipped
    the all-reduce would do), for the test to show that the two differ."""

    def __init__(self, local: bool = False):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.local = local
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
            self.lin.bias.fill_(0.05)

    def _loss(self, pred: torch.Tensor, batch: List[Dict]) -> torch.Tensor:
        err = sum(((pred[i] - d["y"]) ** 2).sum() for i, d in enumerate(batch))
        num = torch.tensor(float(sum(len(d["y"]) for d in batch)))
        return err / torch.clamp(comm.all_reduce_mean(num), min=1)

    def forward(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        pred = self.lin(torch.stack([d["x"] for d in batch])).squeeze(1)
        if self.local:  # two halves, each normalized by its own count, averaged
            h = len(batch) // 2
            loss = 0.5 * (self._loss(pred[:h], batch[:h]) + self._loss(pred[h:], batch[h:]))
        else:
            loss = self._loss(pred, batch)
        return {"core_loss": loss, "loss_sq": loss.detach()}


def samples(n: int, equal_counts: bool) -> List[Dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"x": torch.randn(3, generator=g), "y": torch.randn(2 if equal_counts else 1 + i % 3, generator=g)}
        for i in range(n)
    ]


def shard_batches(data: List[Dict], global_batch: int, rank: int, world: int) -> List[List[Dict]]:
    """Consecutive global batches of ``data``; this rank's contiguous share of each."""
    per_rank = global_batch // world
    return [data[s + rank * per_rank : s + (rank + 1) * per_rank] for s in range(0, len(data), global_batch)]


def train_plain(rank: int, world: int, *, local: bool = False):
    """SGD with momentum, global batch 4 (2 per process with 2 processes), STEPS steps.
    Returns (parameters, logged core_loss per iteration on the main process)."""
    model = CountNormalizedRegression(local=local)
    batches = shard_batches(samples(4 * STEPS, equal_counts=False), 4, rank, world)
    ddp = create_ddp_model(model, broadcast_buffers=False)
    t = SimpleTrainer(ddp, iter(batches), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    t.train(0, STEPS)
    logged = [v for v, _ in t.storage.history("core_loss").values()] if comm.is_main_process() else []
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, logged


def train_accumulated(rank: int, world: int, accum_iter: int):
    """AdamW + full-model norm clipping, ACCUM_STEPS optimizer steps of global batch 4 made of
    ``accum_iter`` micro-batches (equal target counts: with count normalizers accumulation is
    only equivalent when every micro-batch has the same count)."""
    model = CountNormalizedRegression()
    micro = 4 // accum_iter
    batches = shard_batches(samples(4 * ACCUM_STEPS, equal_counts=True), micro, rank, world)
    ddp = create_ddp_model(model, broadcast_buffers=False)
    t = SimpleTrainer(
        ddp,
        iter(batches),
        torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01),
        make_gradient_clipper("full_model", 0.5),
        accum_iter=accum_iter,
    )
    t.train(0, ACCUM_STEPS * accum_iter)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _MeanOfX(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, batch):
        return {"core_loss": torch.stack([d["x"] for d in batch]).mean() + self.w}


def validation_loss(rank: int) -> Dict[str, float]:
    """Rank 0 sees one batch of two inputs (x = 1, 1), rank 1 one batch of one (x = 4): the
    image-weighted mean over both processes is 2 (a mean of batch means would give 2.5)."""
    batches = [[{"x": torch.tensor(1.0)}, {"x": torch.tensor(1.0)}]] if rank == 0 else [[{"x": torch.tensor(4.0)}]]
    return ValidationLoss(0, batches, model=_MeanOfX()).compute()


class _NaNOnRank1AtIter1(nn.Module):
    """Finite everywhere except ``loss_aux`` on rank 1 at its second call."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, batch):
        bad = comm.get_rank() == 1 and self.calls == 1
        self.calls += 1
        aux = self.w * (float("nan") if bad else 1.0)
        return {"core_loss": self.w * 2.0, "loss_aux": aux.detach()}


def non_finite_on_one_rank() -> Dict[str, object]:
    """Every process stops at the same iteration, before the optimizer step; the message names
    the key on the rank that has it and says "another process" on the other."""
    from segtrain.utils.errors import NonFiniteLossError

    model = _NaNOnRank1AtIter1()
    ddp = create_ddp_model(model, broadcast_buffers=False)
    t = SimpleTrainer(ddp, iter([[{}]] * 5), torch.optim.SGD(model.parameters(), lr=0.1))
    try:
        t.train(0, 5)
        return {"error": None}
    except NonFiniteLossError as e:
        return {"error": str(e), "iter": t.iter, "w": float(model.w.detach())}


def run(out_dir: str) -> None:
    rank, world = comm.get_rank(), comm.get_world_size()
    torch.set_num_threads(1)
    result = {
        "world": world,
        "mean_of_rank_plus_one": float(comm.all_reduce_mean(torch.tensor(rank + 1.0))),
        "gathered": comm.all_gather(rank),
        "plain": train_plain(rank, world),
        "accumulated": train_accumulated(rank, world, accum_iter=2),
        "val": validation_loss(rank),
        "non_finite": non_finite_on_one_rank(),
    }
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
