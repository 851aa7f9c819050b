"""``collect_env_info``: a table of the versions and devices a run used (logged at start-up)."""

import os
import platform
import sys

import numpy as np
import torch
from tabulate import tabulate

import segtrain

__all__ = ["collect_env_info"]


def _version(module_name: str) -> str:
    try:
        module = __import__(module_name)
    except ImportError:
        return "not installed"
    return str(getattr(module, "__version__", "unknown"))


def collect_env_info() -> str:
    """Python / torch / numpy / cv2 / fvcore versions, CUDA availability and devices."""
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", " ")),
        ("segtrain", f"{segtrain.__version__} @ {os.path.dirname(segtrain.__file__)}"),
        ("numpy", np.__version__),
        ("PyTorch", f"{torch.__version__} @ {os.path.dirname(torch.__file__)}"),
        ("cv2", _version("cv2")),
        ("fvcore", _version("fvcore")),
        ("iopath", _version("iopath")),
        ("pycocotools", _version("pycocotools")),
        (
            "CPU",
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch threads {torch.get_num_threads()}",
        ),
    ]
    has_cuda = torch.cuda.is_available()
    rows.append(("CUDA available", str(has_cuda)))
    if has_cuda:
        rows.append(("CUDA (torch build)", str(torch.version.cuda)))
        rows.append(("cuDNN", str(torch.backends.cudnn.version())))
        for i in range(torch.cuda.device_count()):
            cap = ".".join(str(x) for x in torch.cuda.get_device_capability(i))
            rows.append((f"GPU {i}", f"{torch.cuda.get_device_name(i)} (capability {cap})"))
    rows.append(("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "<not set>")))
    return tabulate(rows)
