"""A training subprocess (tools/train_net.py) killed with SIGKILL mid-training and restarted with
--resume ends with exactly the weights of an uninterrupted run of the same seed; a truncated
newest checkpoint is detected on --resume and the previous one is used, with the same result.

The runs train ReliabilityTestNet (a test-only model with dropout) on tiny built-in shapes
through the real InstanceDatasetMapper with random resize and flip, on CPU with 1 thread
and deterministic kernels."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "train_net.py")
COMPONENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_reliability_components.py")
MAX_ITER, PERIOD, HANG_AT = 10, 4, 6  # checkpoints after iterations 3 and 7; killed during iteration 6


def _config(tmp_path, out):
    y = tmp_path / f"{out.name}.yaml"
    y.write_text(
        "MODEL:\n  META_ARCHITECTURE: ReliabilityTestNet\n  DEVICE: cpu\n"
        "DATASETS:\n  TRAIN: ('shapes_train',)\n  TEST: ()\n"
        "  SHAPES:\n    NUM_TRAIN: 8\n    NUM_VAL: 2\n    IMAGE_SIZE: 64\n"
        "INPUT:\n  DATASET_MAPPER_NAME: InstanceDatasetMapper\n  MIN_SIZE_TRAIN: (40, 48, 56, 64)\n"
        "  MAX_SIZE_TRAIN: 64\n  RANDOM_FLIP: horizontal\n"
        "DATALOADER:\n  NUM_WORKERS: 0\n"
        f"SOLVER:\n  IMS_PER_BATCH: 2\n  BASE_LR: 0.01\n  MAX_ITER: {MAX_ITER}\n  STEPS: (7,)\n  WARMUP_ITERS: 2\n"
        f"  CHECKPOINT_PERIOD: {PERIOD}\n  MAX_TO_KEEP: 0\n"
        f"SEED: 5\nDETERMINISTIC: True\nLOG_PERIOD: 1\nWRITERS:\n  TENSORBOARD: False\nOUTPUT_DIR: {out}\n"
    )
    return y


def _env(tmp_path, **extra):
    env = dict(
        os.environ,
        PYTHONWARNINGS="ignore",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        SEGTRAIN_DATASETS=str(tmp_path / "datasets"),
    )
    env.pop("SEGTRAIN_TEST_HANG_AT_ITER", None)
    env.update(extra)
    return env


def _start(tmp_path, out, *extra, **env):
    """Start tools/train_net.py on ``out``'s config; output goes to ``<out>.log``."""
    log = open(tmp_path / f"{out.name}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, "--config-file", str(_config(tmp_path, out)), "--module", COMPONENTS, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=_env(tmp_path, **env),
    )
    log.close()
    return proc


def _finish(tmp_path, out, proc):
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / f"{out.name}.log").read_text()
    assert code == 0, output[-3000:]
    return output


def _final_weights(out):
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    return ckpt["iteration"], ckpt["model"]


def _sigkill_when_hanging(tmp_path, out, proc):
    """SIGKILL ``proc`` once it hangs inside iteration HANG_AT."""
    try:
        deadline = time.monotonic() + 240
        while not (out / "hanging").exists():
            assert proc.poll() is None, (tmp_path / f"{out.name}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the iteration to kill"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    # the built-in shapes are generated once, before the concurrent runs
    from segtrain.data.datasets.shapes import ensure_shapes

    ensure_shapes(str(tmp_path / "datasets"), "train", 8, 64)
    full, killed, torn = tmp_path / "full", tmp_path / "killed", tmp_path / "torn"
    # the uninterrupted run and the one to kill run side by side (2 processes, 1 thread each)
    full_proc = _start(tmp_path, full)
    _sigkill_when_hanging(tmp_path, killed, _start(tmp_path, killed, SEGTRAIN_TEST_HANG_AT_ITER=str(HANG_AT)))
    _finish(tmp_path, full, full_proc)
    it_full, w_full = _final_weights(full)
    assert it_full == MAX_ITER - 1

    # killed after the checkpoint of iteration 3, before the one of iteration 7, not finished
    assert (killed / "last_checkpoint").read_text() == "model_0000003.pth"
    assert not (killed / "model_final.pth").exists()
    # torn: a copy whose newest checkpoint is cut in half (as a non-atomic copy or a full disk leaves it)
    shutil.copytree(killed, torn)
    data = (torn / "model_0000003.pth").read_bytes()
    (torn / "model_0000007.pth").write_bytes(data[: len(data) // 2])
    (torn / "last_checkpoint").write_text("model_0000007.pth")

    procs = [(out, _start(tmp_path, out, "--resume")) for out in (killed, torn)]
    for out, proc in procs:
        _finish(tmp_path, out, proc)
    log = (torn / "log.txt").read_text()
    assert "model_0000007.pth is truncated or corrupt" in log and "falling back to the previous checkpoint" in log
    for out in (killed, torn):
        log = (out / "log.txt").read_text()
        assert "Resuming from" in log and f"continues at iteration 4 of {MAX_ITER}" in log, out.name
        it, w = _final_weights(out)
        assert it == it_full and w.keys() == w_full.keys()
        for k in w_full:
            assert torch.equal(w[k], w_full[k]), (out.name, k)  # bit-identical, not merely close
