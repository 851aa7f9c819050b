"""tools/gpu_check.sh on a machine without CUDA: it runs nothing, says so in its last line and
exits 0 (on a CUDA machine the script itself is the check)."""

import os
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs the whole GPU check")
def test_without_cuda_the_last_line_says_so_and_exits_0(tmp_path):
    proc = subprocess.run(
        ["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: no CUDA device") and "nothing was run" in last
    assert (tmp_path / "out" / "summary.txt").read_text().strip() == last
