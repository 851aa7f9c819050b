"""Seeding, RNG state and determinism for a run; ``collect_env_info`` is re-exported here."""

import logging
import os
import random
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Dict, Iterator, Mapping, Optional

import numpy as np
import torch

from .collect_env import collect_env_info

__all__ = [
    "seed_all_rng",
    "get_rng_state",
    "set_rng_state",
    "seeded_rng",
    "setup_determinism",
    "collect_env_info",
    "validation_pass",
    "in_validation_pass",
]

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


def get_rng_state(*, cuda: bool = True) -> Dict[str, Any]:
    """The states of the global RNGs: ``{"python", "numpy", "torch"}`` (CPU), plus ``"cuda"`` (every
    device) when ``cuda`` and CUDA is initialized. The keys are part of the checkpoint format."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNGs from a :func:`get_rng_state` dict."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def seeded_rng(seed: int, *, cuda: bool = True, restore: bool = True) -> Iterator[None]:
    """Seed Python's ``random``, numpy (``seed % 2**32``) and torch for the block, then give the
    caller its RNG states back (``restore``), so the block's draws repeat and the caller's streams
    do not move.

    cuda: True seeds every device too (``torch.manual_seed``) and restores the CUDA states when
    CUDA is initialized; False seeds the CPU generator only (``seed % 2**63``), which is much
    cheaper per call, and leaves the CUDA states alone. restore: False skips the save and
    restore (e.g. in a process that owns its RNGs)."""
    saved = get_rng_state(cuda=cuda) if restore else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if cuda:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed % 2**63)
    try:
        yield
    finally:
        if saved is not None:
            set_rng_state(saved)


_VALIDATION_PASS: ContextVar[bool] = ContextVar("segtrain_validation_pass", default=False)


@contextmanager
def validation_pass() -> Iterator[None]:
    """Marks a validation-loss pass: the model runs in training mode to return its losses, and
    a model whose training draws random inputs (SAM 2's prompts) uses its evaluation settings."""
    token = _VALIDATION_PASS.set(True)
    try:
        yield
    finally:
        _VALIDATION_PASS.reset(token)


def in_validation_pass() -> bool:
    """Whether the code runs inside ``validation_pass()``."""
    return _VALIDATION_PASS.get()


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
