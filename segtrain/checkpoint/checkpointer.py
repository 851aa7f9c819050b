"""Atomic checkpoints with exact resume, ``.pth`` / Detectron2 ``.pkl`` weight loading, and
fallback to the previous good checkpoint when the newest one is corrupt."""

import logging
import os
import pickle
import re
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from segtrain.utils import comm
from segtrain.utils.errors import CheckpointError

from .weights_match import WeightsMatch, convert_weights_for, match_weights

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "atomic_write_bytes",
    "load_model_weights",
    "load_state_strictly",
    "read_checkpoint_file",
    "unwrap_model",
    "weights_prefixes",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT_FILE = "last_checkpoint"
# files that are full checkpoints but never a resume point (diagnostic or best-by-metric)
_NOT_RESUMABLE = ("model_last_good.pth", "model_best.pth")
_ITER_RE = re.compile(r"_(\d+|final)\.pth$")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a (Distributed)DataParallel wrapper, else ``model``."""
    return model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else model


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # directories cannot be fsynced on every platform
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn) -> None:
    """Write through ``write_fn(file)`` into a temp file beside ``path``, fsync, then rename over
    ``path``; a crash at any point leaves the old ``path`` untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename)."""
    _atomic_write(path, lambda f: f.write(data))


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:300]


class Checkpointer:
    """Saves and loads the model plus named checkpointables (objects with ``state_dict`` /
    ``load_state_dict``: optimizer, scheduler, trainer, ...).

    A checkpoint is ``{"model": state_dict, <name>: state, ..., **extra}`` and, when ``cfg``
    is given, ``"config"``: the config YAML. Loading is strict: a model tensor the file does not
    fill, a tensor of another shape or a file tensor the model does not have is a one-line
    ``CheckpointError``, except under ``new_prefixes`` / ``ignore_prefixes`` (``weights_match``).
    Writes are atomic and ``last_checkpoint`` is updated only after the rename. Only the main
    process writes unless ``save_to_disk``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        cfg=None,
        new_prefixes: Sequence[str] = (),
        ignore_prefixes: Sequence[str] = (),
        **checkpointables: Any,
    ):
        self.model = unwrap_model(model)
        self.save_dir = save_dir
        self.save_to_disk = comm.is_main_process() if save_to_disk is None else save_to_disk
        self.cfg = cfg
        self.checkpointables = dict(checkpointables)
        self.new_prefixes, self.ignore_prefixes = tuple(new_prefixes), tuple(ignore_prefixes)
        # what the last load filled (None: nothing loaded); read by the start-up summary
        self.last_match: Optional[WeightsMatch] = None
        self.last_loaded_path = ""

    # ------------------------------------------------------------------ save
    def save(self, name: str, *, tag_last: bool = True, **extra: Any) -> Optional[str]:
        """Write ``<save_dir>/<name>.pth``; ``tag_last`` points ``last_checkpoint`` at it.
        Returns the path (None on processes that do not write)."""
        if not self.save_dir or not self.save_to_disk:
            return None
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.cfg is not None:
            data["config"] = self.cfg.dump()
        data.update(extra)
        os.makedirs(self.save_dir, exist_ok=True)
        path = os.path.join(self.save_dir, f"{name}.pth")
        _atomic_write(path, lambda f: torch.save(data, f))
        logger.info(f"Saved checkpoint to {path}")
        if tag_last:
            self.tag_last_checkpoint(os.path.basename(path))
        return path

    def tag_last_checkpoint(self, basename: str) -> None:
        atomic_write_bytes(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE), basename.encode())

    # ------------------------------------------------------------------ discovery
    def has_checkpoint(self) -> bool:
        return bool(self.save_dir) and os.path.isfile(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE))

    def get_checkpoint_file(self) -> str:
        """Path of the checkpoint named in ``last_checkpoint`` ("" when there is none)."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT_FILE)) as f:
                name = f.read().strip()
        except OSError:
            return ""
        return os.path.join(self.save_dir, name) if name else ""

    def get_all_checkpoint_files(self) -> List[str]:
        """Resumable checkpoints in ``save_dir``, newest (highest iteration, final last) first."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        found = []
        for fname in os.listdir(self.save_dir):
            m = _ITER_RE.search(fname)
            if m and fname not in _NOT_RESUMABLE:
                order = float("inf") if m.group(1) == "final" else int(m.group(1))
                found.append((order, fname))
        return [os.path.join(self.save_dir, f) for _, f in sorted(found, reverse=True)]

    # ------------------------------------------------------------------ load
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """``resume`` and a checkpoint in ``save_dir``: restore everything from it (falling back
        to an older one if it is unreadable). Otherwise load only the model weights from ``path``
        (fresh optimizer and schedule); nothing when ``path`` is empty. Returns the extra data
        left in the loaded checkpoint (e.g. ``iteration``); ``{}`` when nothing was resumed.
        ``last_loaded_path`` / ``last_match`` then describe this call (empty: nothing loaded)."""
        self.last_loaded_path, self.last_match = "", None
        if resume and self.has_checkpoint():
            return self.resume()
        if resume:
            logger.info(f"--resume: no checkpoint in {self.save_dir or '(no output dir)'}; starting a new run")
        if path:
            logger.info(f"Initializing model weights from {path} (model only; schedule starts at iteration 0)")
            self.load(path, checkpointables=[])
        else:
            logger.info("No MODEL.WEIGHTS: training from randomly initialized weights")
        return {}

    def resume(self) -> Dict[str, Any]:
        """Load the newest readable checkpoint of ``save_dir``, everything included."""
        last = self.get_checkpoint_file()
        others = [p for p in self.get_all_checkpoint_files() if not last or os.path.abspath(p) != os.path.abspath(last)]
        candidates = ([last] if last else []) + others
        failures = []
        for path in candidates:
            try:
                ckpt = self._load_file(path)
            except CheckpointError as e:
                failures.append(path)
                logger.warning(f"{e}; falling back to the previous checkpoint")
                continue
            logger.info(f"Resuming from {path}: model, optimizer, scheduler, iteration and trainer state")
            return self._restore(ckpt, path, None)
        raise CheckpointError(
            f"cannot resume from {self.save_dir}: no readable checkpoint "
            f"(tried {', '.join(os.path.basename(p) for p in failures) or 'none'})"
        )

    def load(self, path: str, checkpointables: Optional[Iterable[str]] = None) -> Dict[str, Any]:
        """Load ``path`` (.pth or Detectron2 .pkl): the model and the named checkpointables
        (all by default; ``[]`` for model only). Returns the remaining data of the file."""
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint / weights file not found: {path!r}")
        return self._restore(self._load_file(path), path, checkpointables)

    def _restore(self, ckpt: Dict[str, Any], path: str, checkpointables: Optional[Iterable[str]]) -> Dict[str, Any]:
        self.last_loaded_path = path  # read by the trainer's start-up summary
        self._load_model(ckpt.pop("model"), path)
        names = self.checkpointables if checkpointables is None else list(checkpointables)
        for key in names:
            if key in ckpt:
                self.checkpointables[key].load_state_dict(ckpt.pop(key))
            else:
                logger.warning(f"{path} has no {key!r} state; it keeps its fresh state")
        return ckpt

    def _load_file(self, path: str) -> Dict[str, Any]:
        return read_checkpoint_file(path)

    def _load_model(self, state: Dict[str, Any], path: str) -> None:
        self.last_match = load_state_strictly(
            self.model, state, path, new_prefixes=self.new_prefixes, ignore_prefixes=self.ignore_prefixes
        )


def read_checkpoint_file(path: str) -> Dict[str, Any]:
    """A checkpoint as ``{"model": state_dict, ...}`` (``.pth``, Detectron2 ``.pkl`` with numpy
    arrays, or a bare state dict); a missing, truncated or corrupt file is a one-line
    ``CheckpointError``."""
    try:
        if path.endswith(".pkl"):
            with open(path, "rb") as f:
                data = pickle.load(f, encoding="latin1")
            if not (isinstance(data, dict) and "model" in data):
                data = {"model": data}
            data["model"] = {
                k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in data["model"].items()
            }
            return data
        # segtrain's checkpoints hold numpy RNG states and config strings; these files are trusted
        data = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file not found: {path!r}") from e
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_one_line(e)})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    if "model" not in data:
        data = {"model": data}  # a bare state_dict
    return data


def load_state_strictly(
    model: nn.Module,
    state: Dict[str, Any],
    path: str,
    *,
    new_prefixes: Sequence[str] = (),
    ignore_prefixes: Sequence[str] = (),
) -> WeightsMatch:
    """Load ``state`` (read from ``path``) into ``model`` as the ``Checkpointer`` class doc says:
    the model's ``convert_weights`` first, then every tensor must fit unless a prefix allows
    it; a ``CheckpointError`` otherwise (the model untouched). Logs and returns the match."""
    model = unwrap_model(model)
    state = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    state, set_aside = convert_weights_for(model, state)
    match, loadable = match_weights(
        model.state_dict(), state, new_prefixes=new_prefixes, ignore_prefixes=ignore_prefixes, set_aside=set_aside
    )
    if not match.ok:
        raise match.error(path)
    model.load_state_dict(loadable, strict=False)
    logger.info(f"Weights from {path}: {match.summary()}")
    return match


def weights_prefixes(cfg) -> Dict[str, List[str]]:
    """The keyword arguments ``new_prefixes`` / ``ignore_prefixes`` from the config's
    ``MODEL.WEIGHTS_NEW_PREFIXES`` / ``MODEL.WEIGHTS_IGNORE_PREFIXES``."""
    return {
        "new_prefixes": list(cfg.MODEL.WEIGHTS_NEW_PREFIXES),
        "ignore_prefixes": list(cfg.MODEL.WEIGHTS_IGNORE_PREFIXES),
    }


def load_model_weights(
    model: nn.Module, path: str, *, new_prefixes: Sequence[str] = (), ignore_prefixes: Sequence[str] = ()
) -> WeightsMatch:
    """The model part of the weights file ``path`` loaded strictly into ``model``
    (``read_checkpoint_file`` + ``load_state_strictly``): what a family's predictor builder calls
    for ``MODEL.WEIGHTS``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path!r}")
    return load_state_strictly(
        model, read_checkpoint_file(path)["model"], path, new_prefixes=new_prefixes, ignore_prefixes=ignore_prefixes
    )


class PeriodicCheckpointer:
    """Saves ``<prefix>_<iteration:07d>`` every ``period`` iterations, keeping only the newest
    ``max_to_keep`` such files in the folder (0 keeps all)."""

    def __init__(self, checkpointer: Checkpointer, period: int, *, max_to_keep: int = 0, file_prefix: str = "model"):
        self.checkpointer = checkpointer
        self.period = int(period)
        self.max_to_keep = int(max_to_keep or 0)
        self.file_prefix = file_prefix
        self._pattern = re.compile(rf"^{re.escape(file_prefix)}_(\d{{7}})\.pth$")

    def step(self, iteration: int, **extra: Any) -> Optional[str]:
        """Called after iteration ``iteration`` (0-based) finished."""
        if self.period <= 0 or (iteration + 1) % self.period != 0:
            return None
        return self.save(iteration, **extra)

    def save(self, iteration: int, **extra: Any) -> Optional[str]:
        path = self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", iteration=iteration, **extra)
        if path is not None:
            self._remove_old()
        return path

    def _remove_old(self) -> None:
        if self.max_to_keep <= 0:
            return
        folder = self.checkpointer.save_dir
        found = sorted((int(m.group(1)), f) for f in os.listdir(folder) if (m := self._pattern.match(f)))
        for _, fname in found[: -self.max_to_keep]:
            try:
                os.remove(os.path.join(folder, fname))
            except OSError as e:
                logger.warning(f"could not remove old checkpoint {fname}: {_one_line(e)}")
