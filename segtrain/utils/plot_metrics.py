"""Plot a training run's metrics.json (JSON lines, one object per logged iteration) as a grid
of subplots: one per loss component or metric against the iteration. Aux copies of a loss
(``loss_ce_0`` .. ``loss_ce_8``, ``_aux_i``, ``_fs``, ``_o2m``) share the subplot of their
main key, drawn faded; per-class metrics (``segm/AP-<class>``) share one subplot per task.
Training and validation copies of a key (``loss_ce`` or ``train/loss_ce`` with ``val/loss_ce``,
see ``WRITERS.TRAIN_PREFIX`` and ``TEST.VAL_LOSS``) share a subplot: training blue, validation green.

    python tools/plot_metrics.py output/metrics.json [--output metrics.png] [--keys REGEX]

The end-of-run report (``segtrain.engine.hooks.TrainingReport``) also calls :func:`write_metrics_png`,
so every run leaves ``OUTPUT_DIR/metrics.png`` beside ``metrics.json``.
"""

import json
import logging
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from segtrain.utils.errors import SegtrainError

logger = logging.getLogger(__name__)

# Suffixes of deep-supervision / extra-stage copies of a loss (docs/losses.md), stripped repeatedly.
_AUX_SUFFIX = re.compile(r"(_aux_\d+|_\d+|_fs|_o2m)$")
_PER_CLASS = re.compile(r"^(.*/)?(AP|IoU|ACC)-.+$")
_X_KEYS = ("iteration", "iter", "step")
# split prefixes: "train/loss_ce" and "val/loss_ce" are plotted with "loss_ce"
_SPLITS = ("train/", "val/")


def _error(msg: str):
    return SegtrainError(msg)


def read_metrics(path: str) -> Tuple[List[Dict[str, float]], str]:
    """Records of a JSON-lines file (or a JSON list of objects), numeric values only; returns
    (records, name of the x key or '' for the line index). A truncated last line (a run killed
    mid-write) is skipped with a warning; any other malformed line is an error naming it."""
    if not os.path.isfile(path):
        raise _error(f"metrics file not found: {path!r}")
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise _error(f"{path}: metrics file is empty")
    raw: List[dict] = []
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise _error(f"{path}: not valid JSON ({e})") from None
    else:
        lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
        for pos, (lineno, line) in enumerate(lines):
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError as e:
                if pos == len(lines) - 1 and pos > 0:
                    logger.warning(f"{path}:{lineno}: skipping a truncated last line")
                    continue
                raise _error(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
    records = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise _error(f"{path}: entry {i + 1} is a {type(r).__name__}, expected a JSON object")
        records.append(
            {
                k: float(v)
                for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            }
        )
    x_key = next((k for k in _X_KEYS if any(k in r for r in records)), "")
    if not any(k != x_key for r in records for k in r):
        raise _error(f"{path}: no numeric metrics to plot")
    if x_key:
        kept = latest_history(records, x_key)
        if len(kept) != len(records):
            logger.info(
                f"{path}: the {x_key} goes back (a resumed run or a new run in the same folder); "
                f"using the latest history, {len(kept)} of {len(records)} records"
            )
        records = kept
    return records, x_key


def latest_history(records: List[Dict[str, float]], x_key: str) -> List[Dict[str, float]]:
    """The JSON writer appends, so a resumed run repeats the iterations logged after its
    checkpoint, and a new run in the same folder starts again at 0. Wherever ``x_key`` goes
    back to ``v``, the earlier records at ``x_key >= v`` are dropped: what is left is one
    history, that of the latest run. Records without ``x_key`` are kept."""
    out: List[Dict[str, float]] = []
    last = -math.inf
    for r in records:
        x = r.get(x_key)
        if x is not None:
            if x < last:
                out = [o for o in out if o.get(x_key, -math.inf) < x]
            last = x
        out.append(r)
    return out


def _strip_aux(key: str) -> str:
    base = key
    while True:
        s = _AUX_SUFFIX.sub("", base)
        if s == base or not s:
            return base
        base = s


def split_of(key: str) -> Tuple[str, str]:
    """``("val/", "loss_ce")`` for "val/loss_ce"; ``("", key)`` for a key without a split prefix."""
    for split in _SPLITS:
        if key.startswith(split) and len(key) > len(split):
            return split, key[len(split) :]
    return "", key


def is_loss_name(name: str) -> bool:
    """A loss component or total: a name with a ``loss`` word (``loss_ce``, ``presence_loss_aux_0``,
    ``core_loss_final``, ``total_loss``); not a metric such as ``presence_dec_acc`` or ``ce_f1``."""
    return "loss" in name.split("_")


def variant_of(key: str, keys: Sequence[str]) -> Optional[str]:
    """``"video/J&F"`` for ``"video_box/J&F"`` when ``keys`` holds it: the same evaluation
    metric under another variant of the task (here the box-prompted one); None otherwise."""
    task, sep, metric = key.partition("/")
    if not sep or "_" not in task or f"{task}/" in _SPLITS:
        return None
    base = f"{task.rsplit('_', 1)[0]}/{metric}"
    return base if base in keys else None


def group_keys(keys: List[str]) -> "OrderedDict[str, List[str]]":
    """Subplot title -> keys drawn in it: losses first (total first), then other metrics.
    A key's train/val copies (``train/<k>``, ``val/<k>``) join the subplot of ``<k>``, and an
    evaluation variant (``video_box/J&F``) the subplot of its task's key (``video/J&F``)."""
    groups: Dict[str, List[str]] = {}
    names = {k: split_of(k)[1] for k in keys}
    all_names = set(names.values())
    stripped = {k: _strip_aux(n) for k, n in names.items()}
    key_set = set(keys)
    for k in keys:
        name = names[k]
        m = _PER_CLASS.match(k)
        variant = variant_of(k, key_set)
        if variant is not None:
            groups.setdefault(variant, []).append(k)
            continue
        if m:
            base = f"{m.group(1) or ''}{m.group(2)}-<class>"
        else:
            base = stripped[k]
            # a lone "foo_2" with no "foo" and no siblings is a name of its own, not an aux copy
            siblings = {names[j] for j, v in stripped.items() if v == base}
            if base != name and base not in all_names and len(siblings) < 2:
                base = name
        groups.setdefault(base, []).append(k)

    def rank(title: str):
        leaf = title.rsplit("/", 1)[-1]
        if leaf in ("core_loss", "total_loss"):
            return (0, title)
        if is_loss_name(leaf):
            return (1, title)
        return (2, title)

    return OrderedDict((t, sorted(groups[t])) for t in sorted(groups, key=rank))


def match_keys(keys: List[str], key_regex: str, what: str = "metric") -> List[str]:
    """The keys in which ``key_regex`` is found; a bad pattern or no match is a one-line error."""
    try:
        pattern = re.compile(key_regex)
    except re.error as e:
        raise _error(f"--keys {key_regex!r} is not a valid regular expression ({e})") from None
    keys = [k for k in keys if pattern.search(k)]
    if not keys:
        raise _error(f"--keys {key_regex!r} matches no {what}")
    return keys


def plot_metrics(records: List[Dict[str, float]], x_key: str, output: str, key_regex: str = "", smooth: int = 1) -> int:
    """Draw the grid into ``output`` (PNG); returns the number of subplots."""
    import matplotlib  # noqa: PLC0415 (optional dependency)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (optional dependency)

    keys = sorted({k for r in records for k in r if k != x_key})
    if key_regex:
        keys = match_keys(keys, key_regex, "metric")
    groups = group_keys(keys)
    n = len(groups)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (title, members) in zip(axes.flat, groups.items()):
        variants = [k for k in members if k != title and variant_of(k, members) == title]
        for k in members:
            xs = [r.get(x_key, i) if x_key else i for i, r in enumerate(records) if k in r]
            ys = [r[k] for r in records if k in r]
            if smooth > 1 and len(ys) > smooth:
                ys = [
                    sum(ys[max(0, i - smooth + 1) : i + 1]) / len(ys[max(0, i - smooth + 1) : i + 1])
                    for i in range(len(ys))
                ]
            split, name = split_of(k)
            is_val = split == "val/"
            main = name == title or len(members) == 1
            style = dict(marker="s" if is_val else "o", markersize=3) if len(ys) < 30 or is_val else {}
            if k in variants:  # C0 is the task's own key
                ax.plot(xs, ys, color=f"C{3 + variants.index(k)}", linewidth=1.4, label=k, **style)
            elif main:
                ax.plot(xs, ys, color="C2" if is_val else "C0", linewidth=1.6, label=k, zorder=3, **style)
            elif title.endswith("-<class>"):
                ax.plot(xs, ys, linewidth=1.0, label=k.rsplit("-", 1)[-1], **style)
            else:
                ax.plot(xs, ys, color="C2" if is_val else "C1", alpha=0.3, linewidth=0.8, **style)
        mains = [k for k in members if split_of(k)[1] == title]
        n_aux = len(members) - len(mains) - len(variants)
        ax.set_title(title + (f" (+{n_aux} aux, faded)" if n_aux and mains else ""), fontsize=9)
        ax.set_xlabel(x_key or "record", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if (title.endswith("-<class>") and len(members) <= 12) or len({split_of(k)[0] for k in mains}) > 1 or variants:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return n


def write_metrics_png(
    metrics_path: str, output: str = "", history: Optional[Tuple[List[Dict[str, float]], str]] = None
) -> Optional[str]:
    """Plot ``metrics_path`` into ``output`` (default: ``metrics.png`` beside it); returns the
    PNG path, or None when matplotlib is not installed (logged, not an error). ``history``:
    what ``read_metrics(metrics_path)`` returned, when the caller has read it already."""
    try:
        import matplotlib  # noqa: F401, PLC0415 (optional dependency)
    except ImportError:
        logger.info("matplotlib is not installed: no metrics.png (pip install matplotlib)")
        return None
    records, x_key = history if history is not None else read_metrics(metrics_path)
    output = output or os.path.join(os.path.dirname(os.path.abspath(metrics_path)), "metrics.png")
    n = plot_metrics(records, x_key, output)
    logger.info(f"Training curves ({n} subplots from {len(records)} records) written to {output}")
    return output
