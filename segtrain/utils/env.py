"""Seeding and determinism for a run; ``collect_env_info`` is re-exported here."""
import logging
import os
import random
from datetime import datetime
from typing import Optional

import numpy as np
import torch

from .collect_env import collect_env_info

__all__ = ["seed_all_rng", "setup_determinism", "collect_env_info"]

logger = logging.getLogger(__name__)


def seed_all_rng(seed: Optional[int] = None) -> int:
    """Seed Python's ``random``, numpy and torch (CPU and CUDA).

    seed: None or < 0 draws a fresh seed from the pid, time and os entropy (and logs it).
    Returns the seed used.
    """
    if seed is None or seed < 0:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f")) + int.from_bytes(os.urandom(2), "big")) % (2**31)
        logger.info(f"Using a random seed: {seed}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return seed


def setup_determinism(deterministic: bool, cudnn_benchmark: bool = False) -> None:
    """Deterministic kernels (``torch.use_deterministic_algorithms``, warn-only for ops without
    one) or, when not deterministic, cuDNN autotuning as asked."""
    if deterministic:
        # cuBLAS needs a fixed workspace size to be deterministic; set before the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        logger.info("Deterministic algorithms enabled")
    else:
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
