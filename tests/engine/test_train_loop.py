"""SimpleTrainer / AMPTrainer: core-loss-only backward, non-finite check, accumulation,
hook order and state, request_stop."""

import math

import pytest
import torch
from torch import nn

from segtrain.engine.hooks import CallbackHook
from segtrain.engine.train_loop import AMPTrainer, HookBase, SimpleTrainer
from segtrain.utils.errors import ConfigError, NonFiniteLossError


class LinearRegression(nn.Module):
    """Batch = list of {"x": [2], "y": []}; mean squared error as core_loss."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[0.5, -0.25]]))
            self.lin.bias.fill_(0.1)

    def forward(self, batch):
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        err = (self.lin(x).squeeze(1) - y) ** 2
        return {"core_loss": err.mean(), "loss_max": err.max()}


def _samples(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"x": torch.randn(2, generator=g), "y": torch.randn((), generator=g)} for _ in range(n)]


def _loader(samples, bs):
    def gen():
        i = 0
        while True:
            yield samples[i : i + bs]
            i = (i + bs) % len(samples)

    return gen()


def test_accumulation_2x2_equals_1x4():
    data = _samples(8)
    big = LinearRegression()
    SimpleTrainer(big, _loader(data, 4), torch.optim.SGD(big.parameters(), lr=0.1)).train(0, 2)
    small = LinearRegression()
    t = SimpleTrainer(small, _loader(data, 2), torch.optim.SGD(small.parameters(), lr=0.1), accum_iter=2)
    t.train(0, 4)
    assert t.iter == 4
    for a, b in zip(big.parameters(), small.parameters()):
        assert torch.allclose(a, b, atol=1e-6), (a, b)
    # and it differs from stepping on every batch of 2
    plain = LinearRegression()
    SimpleTrainer(plain, _loader(data, 2), torch.optim.SGD(plain.parameters(), lr=0.1)).train(0, 4)
    assert not torch.allclose(plain.lin.weight, big.lin.weight, atol=1e-4)


def test_only_core_loss_is_backpropagated():
    class TwoLosses(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.tensor(1.0))
            self.b = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return {"core_loss": 3 * self.a, "loss_aux": 100 * self.b}

    m = TwoLosses()
    t = SimpleTrainer(m, _loader([{}], 1), torch.optim.SGD(m.parameters(), lr=0.1))
    t.train(0, 1)
    assert m.a.item() == pytest.approx(1 - 0.3) and m.b.item() == 1.0
    latest = t.storage.latest()
    assert latest["core_loss"][0] == pytest.approx(3.0) and latest["loss_aux"][0] == pytest.approx(100.0)


class NaNAt(nn.Module):
    def __init__(self, bad_iter, key):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.calls, self.bad_iter, self.key = 0, bad_iter, key

    def forward(self, batch):
        it, self.calls = self.calls, self.calls + 1
        bad = float("nan") if it == self.bad_iter else 1.0
        core = self.w * 2
        return {
            "loss_ce": self.w * 1.0,
            self.key: self.w * bad,
            "core_loss": core + (self.w * bad if self.key != "x" else 0),
        }


def test_non_finite_loss_names_key_and_iteration():
    m = NaNAt(37, "loss_dice_3")
    t = SimpleTrainer(m, _loader([{}], 1), torch.optim.SGD(m.parameters(), lr=0.0))
    with pytest.raises(NonFiniteLossError) as e:
        t.train(0, 100)
    assert str(e.value) == "non-finite loss at iteration 37: loss_dice_3=nan (core_loss=nan)"
    assert t.iter == 37 and isinstance(t.exception, NonFiniteLossError)


def test_non_finite_logged_only_key_still_stops():
    class InfAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return {"core_loss": self.w * 1.0, "loss_iou": torch.tensor(float("inf"))}

    m = InfAux()
    with pytest.raises(NonFiniteLossError, match=r"iteration 0: loss_iou=inf \(core_loss=1.0\)"):
        SimpleTrainer(m, _loader([{}], 1), torch.optim.SGD(m.parameters(), lr=0.1)).train(0, 3)
    assert m.w.item() == 1.0  # no update from the bad step


def test_missing_core_loss_is_config_error():
    class NoCore(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0))

        def forward(self, batch):
            return {"loss_ce": self.w}

    m = NoCore()
    with pytest.raises(ConfigError, match="no 'core_loss'.*loss_ce"):
        SimpleTrainer(m, _loader([{}], 1), torch.optim.SGD(m.parameters(), lr=0.1)).train(0, 1)


def test_hooks_order_state_and_stop():
    calls = []

    class Recorder(HookBase):
        def __init__(self, tag):
            self.tag, self.count = tag, 0

        def before_train(self):
            calls.append((self.tag, "before_train"))

        def after_step(self):
            self.count += 1
            calls.append((self.tag, "after_step", self.trainer.iter))

        def after_train(self):
            calls.append((self.tag, "after_train", self.trainer.iter))

        def state_dict(self):
            return {"count": self.count}

        def load_state_dict(self, s):
            self.count = s["count"]

    m = LinearRegression()
    t = SimpleTrainer(m, _loader(_samples(4), 2), torch.optim.SGD(m.parameters(), lr=0.1))
    rec = Recorder("a")
    stop = CallbackHook(after_step=lambda tr: tr.request_stop("test") if tr.iter == 2 else None)
    t.register_hooks([rec, None, stop])
    t.train(0, 10)
    assert t.iter == 3  # stopped after iteration 2
    assert calls[0] == ("a", "before_train") and calls[-1] == ("a", "after_train", 3)
    assert [c[2] for c in calls if c[1] == "after_step"] == [0, 1, 2]
    state = t.state_dict()
    assert state["iteration"] == 3 and state["hooks"] == {Recorder.__qualname__: {"count": 3}}
    rec2 = Recorder("b")
    t2 = SimpleTrainer(m, _loader(_samples(4), 2), torch.optim.SGD(m.parameters(), lr=0.1))
    t2.register_hooks([rec2])
    t2.load_state_dict(state)
    assert t2.iter == 3 and rec2.count == 3


def test_amp_trainer_cpu_bf16_and_state():
    class DtypeProbe(LinearRegression):
        def forward(self, batch):
            x = torch.stack([d["x"] for d in batch])
            self.seen = self.lin(x).dtype
            return super().forward(batch)

    m = DtypeProbe()
    t = AMPTrainer(m, _loader(_samples(4), 2), torch.optim.SGD(m.parameters(), lr=0.1))
    w0 = m.lin.weight.detach().clone()
    t.train(0, 2)
    assert m.seen == torch.bfloat16 and t.grad_scaler is None
    assert m.lin.weight.dtype == torch.float32 and not torch.equal(w0, m.lin.weight)
    assert math.isfinite(t.storage.latest()["core_loss"][0])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 + GradScaler needs CUDA")
def test_amp_trainer_cuda_fp16_scaler_state():
    m = LinearRegression().cuda()
    data = [{"x": d["x"].cuda(), "y": d["y"].cuda()} for d in _samples(4)]
    t = AMPTrainer(m, _loader(data, 2), torch.optim.SGD(m.parameters(), lr=0.1))
    t.train(0, 2)
    assert t.dtype == torch.float16 and "scale" in t.state_dict()["grad_scaler"]


def test_bad_amp_dtype():
    m = LinearRegression()
    with pytest.raises(ConfigError, match="SOLVER.AMP.DTYPE.*'fp8'"):
        AMPTrainer(m, [], torch.optim.SGD(m.parameters(), lr=0.1), dtype="fp8")


def test_non_finite_error_from_the_model_gets_the_iteration():
    """A matcher's non-finite-cost error is raised inside the model, which does not know the
    iteration: the loop re-raises it, same type and one line, with the iteration added. The
    loop writes nothing into the model."""

    class _Crit:
        iteration = None

    class _FailsAtCall(LinearRegression):
        def __init__(self, bad_call):
            super().__init__()
            self.criterion = _Crit()
            self.calls, self.bad_call = 0, bad_call

        def forward(self, batch):
            self.calls += 1
            if self.calls == self.bad_call:
                raise NonFiniteLossError(
                    "HungarianMatcher: non-finite mask cost (cost_mask) for image 1 of the "
                    "batch; pred_masks holds NaN or Inf"
                )
            return super().forward(batch)

    model = _FailsAtCall(bad_call=2)
    t = SimpleTrainer(model, _loader(_samples(8), 2), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(NonFiniteLossError) as e:
        t.train(3, 6)
    assert str(e.value) == (
        "HungarianMatcher: non-finite mask cost (cost_mask) for image 1 of the batch; "
        "pred_masks holds NaN or Inf (at iteration 4)"
    )
    assert t.exception is e.value and t.iter == 4
    assert "iteration" not in vars(model.criterion)


def test_one_host_read_per_step(monkeypatch):
    """The step reads the device once (one ``tolist`` of the stacked losses and gradient norm):
    no ``item`` / ``float`` / ``bool`` on a tensor, and the logged values are the losses."""
    from segtrain.solver import make_gradient_clipper

    m = LinearRegression()
    t = SimpleTrainer(
        m, _loader(_samples(8), 2), torch.optim.SGD(m.parameters(), lr=0.1), make_gradient_clipper("full_model", 0.5)
    )
    reads = {"tolist": 0, "item": 0, "__float__": 0, "__bool__": 0}
    originals = {name: getattr(torch.Tensor, name) for name in reads}

    def counting(name):
        def read(self, *args, **kwargs):
            reads[name] += 1
            return originals[name](self, *args, **kwargs)

        return read

    steps, params = [], []

    class Count(HookBase):
        def before_step(self):
            params.append({k: v.detach().clone() for k, v in m.state_dict().items()})
            for name in reads:
                monkeypatch.setattr(torch.Tensor, name, counting(name))

        def after_step(self):
            monkeypatch.undo()
            steps.append(dict(reads))
            reads.update({k: 0 for k in reads})

    t.register_hooks([Count()])
    t.train(0, 3)
    assert steps == [{"tolist": 1, "item": 0, "__float__": 0, "__bool__": 0}] * 3
    latest = t.storage.latest()
    ref = LinearRegression()
    ref.load_state_dict(params[2])  # the weights the last step's forward saw
    with torch.no_grad():
        expected = ref(_samples(8)[4:6])
    assert latest["core_loss"] == (pytest.approx(float(expected["core_loss"])), 2)
    assert latest["loss_max"][0] == pytest.approx(float(expected["loss_max"]))
    assert all(isinstance(latest[k][0], float) and math.isfinite(latest[k][0]) for k in ("grad_norm", "data_time"))
