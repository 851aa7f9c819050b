"""The CUDA paths (marked ``cuda``; ``tools/gpu_check.sh`` runs them, CPU runs skip them with a
reason): AMP fp16 with ``GradScaler`` and bf16 through ``DefaultTrainer`` on the Mask2Former
tiny config; a one-GPU NCCL process group through the launcher's worker (barrier and
all-reduce on the device); ``tools/train_net.py --num-gpus 1`` training on the GPU; the train
benchmark's CUDA timing and peak memory (``torch.cuda.max_memory_allocated``)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (tools/gpu_check.sh runs it)"),
]

#: built-in shapes data at 64 px, a few images: overrides for projects/m2f/tiny.yaml
SMALL = [
    "DATASETS.SHAPES.IMAGE_SIZE", "64", "DATASETS.SHAPES.NUM_TRAIN", "8", "DATASETS.SHAPES.NUM_VAL", "2",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "64", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
]  # fmt: skip


def _cfg(tmp_path, *extra):
    import segtrain.modeling  # noqa: F401  (registers the model config keys)
    from segtrain.config import load_config

    opts = SMALL + ["MODEL.DEVICE", "cuda", "OUTPUT_DIR", str(tmp_path / "out"), "SOLVER.MAX_ITER", "3"]
    opts += ["TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1000"] + list(extra)
    cfg = load_config(TINY, opts, [])
    cfg.freeze()
    return cfg


@pytest.mark.parametrize(
    "dtype, expected, scaled", [("float16", torch.float16, True), ("bfloat16", torch.bfloat16, False)]
)
def test_amp_trains_on_cuda(tmp_path, tmp_datasets_root, dtype, expected, scaled):
    """Three AMP steps: autocast in ``dtype`` (fp16 with a GradScaler whose scale stays finite),
    float32 master weights that change, finite losses."""
    from segtrain.engine import DefaultTrainer

    if expected == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = _cfg(tmp_path, "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", dtype)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    step = trainer._trainer
    assert step.dtype == expected and (step.grad_scaler is not None) == scaled
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert all(params[n].dtype == torch.float32 and params[n].is_cuda for n in before)
    assert any(not torch.equal(before[n], params[n].detach()) for n in before)
    assert math.isfinite(trainer.storage.latest()["core_loss"][0])
    if scaled:
        scale = step.grad_scaler.get_scale()
        assert math.isfinite(scale) and scale > 0
        assert "scale" in step.state_dict()["grad_scaler"]


def test_one_gpu_nccl_process_group(tmp_path):
    """The launcher's worker with one GPU: an NCCL group of one, a barrier and an all-reduce on
    the device, the group destroyed after."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import torch, torch.distributed as dist
        from segtrain.engine.launch import DEFAULT_TIMEOUT, _distributed_worker, _find_free_port
        from segtrain.utils import comm

        def main():
            assert dist.get_backend() == "nccl", dist.get_backend()
            t = torch.ones(3, device="cuda") * (comm.get_rank() + 2)
            dist.all_reduce(t)
            comm.synchronize()
            print("RESULT", dist.get_world_size(), comm.get_local_size(), t.sum().item(), flush=True)

        url = f"tcp://127.0.0.1:{{_find_free_port()}}"
        _distributed_worker(0, main, 1, 1, 0, url, (), DEFAULT_TIMEOUT)
        print("DESTROYED", not dist.is_initialized(), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESULT 1 1 6.0" in out.stdout and "DESTROYED True" in out.stdout


def test_train_net_num_gpus_1_on_cuda(tmp_path, tmp_datasets_root):
    """``tools/train_net.py --num-gpus 1`` trains on the GPU and writes its final weights."""
    out_dir = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file", TINY, "--num-gpus", "1"]
    cmd += SMALL + ["MODEL.DEVICE", "cuda", "OUTPUT_DIR", str(out_dir), "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"]
    env = dict(os.environ, SEGTRAIN_DATASETS=str(tmp_datasets_root), PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out_dir / "model_final.pth").is_file()
    with open(out_dir / "metrics.json") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    assert max(x["iteration"] for x in lines) == 3
    assert all(math.isfinite(x["core_loss"]) for x in lines if "core_loss" in x)
    assert "cuda" in open(out_dir / "log.txt").read()


def test_train_benchmark_on_cuda(tmp_path, tmp_datasets_root):
    """The train benchmark on CUDA: synchronised step times and the peak of
    ``torch.cuda.max_memory_allocated`` above the memory before the step."""
    out = tmp_path / "train.json"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "train", "--device", "cuda"]
    cmd += ["--config-file", TINY, "--warmup", "1", "--repeat", "2", "--variants", "segtrain,no_loss"]
    cmd += ["--output", str(out)] + SMALL
    env = dict(os.environ, SEGTRAIN_DATASETS=str(tmp_datasets_root))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["settings"]["device_name"].startswith("cuda")
    for r in report["results"]:
        assert r["fwd_bwd_median_ms"] > 0 and r["peak_mb"] > 0, r
