"""Worker of tests/engine/test_cpu_threads.py, importable by name in spawned processes: sets
its threads as tools/train_net.py does and writes what it chose."""

import json
import os

import torch

from segtrain.config import get_cfg
from segtrain.engine.cli import configure_cpu_threads
from segtrain.utils import comm


def report_threads(out_dir: str) -> None:
    line = configure_cpu_threads(get_cfg()).describe()
    result = {
        "threads": torch.get_num_threads(),
        "free": os.environ.get("SEGTRAIN_FREE_CPUS"),
        "local_size": comm.get_local_size(),
        "line": line,
    }
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(result, f)
