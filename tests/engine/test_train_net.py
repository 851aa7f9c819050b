"""tools/train_net.py as a user runs it: one-line errors with exit code 2, and a tiny run."""

import json
import os
import subprocess
import sys

import cv2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tools", "train_net.py")
COMPONENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_engine_components.py")


def _run(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=300
    )


def test_missing_config_file(tmp_path):
    r = _run("--config-file", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: config file not found: {str(tmp_path / 'nope.yaml')!r}"]
    assert "Traceback" not in r.stdout + r.stderr


def test_no_config_file_flag(tmp_path):
    r = _run("OUTPUT_DIR", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: no --config-file given (e.g. --config-file projects/m2f/r50.yaml)"]
    assert not (tmp_path / "out").exists()


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    r = _run("--config-file", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "SOLVER.BASE_LRR" in lines[0] and "SOLVER.BASE_LR" in lines[0]


def _yaml(tmp_path, out):
    y = tmp_path / "tiny.yaml"
    y.write_text(
        "MODEL:\n  META_ARCHITECTURE: EngineTestNet\n  DEVICE: cpu\n"
        "DATASETS:\n  TRAIN: ('engine_test_train',)\n  TEST: ()\n"
        "INPUT:\n  DATASET_MAPPER_NAME: EngineTestMapper\nDATALOADER:\n  NUM_WORKERS: 0\n"
        "SOLVER:\n  IMS_PER_BATCH: 2\n  MAX_ITER: 4\n  CHECKPOINT_PERIOD: 2\n  STEPS: (3,)\n"
        f"SEED: 3\nLOG_PERIOD: 2\nWRITERS:\n  TENSORBOARD: False\nOUTPUT_DIR: {out}\n"
    )
    return y


@pytest.mark.slow
def test_train_then_resume_then_eval_only(tmp_path):
    out = tmp_path / "out"
    y = _yaml(tmp_path, out)
    r = _run("--config-file", str(y), "--module", COMPONENTS)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"config.yaml", "log.txt", "metrics.json", "model_final.pth", "last_checkpoint"} <= set(os.listdir(out))
    assert "No MODEL.WEIGHTS" in open(out / "log.txt").read()
    # training curves as a PNG beside metrics.json, one subplot per loss key
    png = cv2.imread(str(out / "metrics.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    # --resume of a finished run: continues at iteration 4 of 4, i.e. nothing left to do
    r = _run("--config-file", str(y), "--module", COMPONENTS, "--resume", "SOLVER.MAX_ITER", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    log = open(out / "log.txt").read()
    assert "Resuming from" in log and "continues at iteration 4 of 6" in log
    assert max(json.loads(x)["iteration"] for x in open(out / "metrics.json")) == 5
    r = _run("--config-file", str(y), "--module", COMPONENTS, "--eval-only")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: --eval-only needs MODEL.WEIGHTS (a .pth / .pkl file) or --resume"
    ]


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    """--num-gpus 2 on CPU: two Gloo processes, DDP model, rank 0 writes checkpoints and logs."""
    out = tmp_path / "ddp"
    y = _yaml(tmp_path, out)
    r = _run("--config-file", str(y), "--module", COMPONENTS, "--num-gpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    files = set(os.listdir(out))
    assert {"model_final.pth", "log.txt", "log.txt.rank1", "metrics.json"} <= files
    assert "World size: 2" in open(out / "log.txt").read()
    lines = [json.loads(x) for x in open(out / "metrics.json")]
    assert lines[-1]["iteration"] == 3 and "core_loss" in lines[-1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """Started by torchrun (2 processes, its env:// variables): no spawning, one group of 2,
    one metrics file, rank 0 writes the checkpoints."""
    out = tmp_path / "torchrun"
    y = _yaml(tmp_path, out)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            SCRIPT,
            "--config-file",
            str(y),
            "--module",
            COMPONENTS,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    files = set(os.listdir(out))
    assert {"model_final.pth", "log.txt", "log.txt.rank1", "metrics.json"} <= files
    # one metrics file for both ranks (metrics.png is its plot, not a second log)
    assert not any(f.startswith("metrics") and f.endswith(".json") and f != "metrics.json" for f in files)
    log = open(out / "log.txt").read()
    assert "World size: 2" in log and "Rank of current process: 0" in log
    assert "Rank of current process: 1" in open(out / "log.txt.rank1").read()
    lines = [json.loads(x) for x in open(out / "metrics.json")]
    assert lines[-1]["iteration"] == 3 and "core_loss" in lines[-1]
